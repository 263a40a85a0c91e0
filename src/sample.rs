//! `flashctl sample`: eager sampling with any model flashctl can run (model directory, diffusers
//! directory, ONNX teacher) to a PNG (grid for images, scatter for 2-D) and optionally the raw
//! tensor `image`; with `--inputs`, from a given `noise` (and `class_labels`), the names of the
//! exported graph's input and output.

use crate::checkpoint;
use crate::export::seeded_noise;
use crate::sampler::SamplerKind;
use crate::teacher::Teacher;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

pub struct SampleReport {
    pub png: Option<PathBuf>,
    pub tensor: Option<PathBuf>,
    pub steps: usize,
    pub count: usize,
    pub seconds: f64,
}

/// Where the starting noise comes from.
pub enum Start<'a> {
    /// `count` seeded standard-normal samples (labels cycle through the classes).
    Seeded { count: usize, seed: u64 },
    /// `x_T` (the starting state, already scaled) and optional `class_labels` from a file.
    File(&'a Path),
}

pub struct SampleOptions<'a> {
    pub steps: Option<usize>,
    pub kind: Option<SamplerKind>,
    pub start: Start<'a>,
    pub png: Option<&'a Path>,
    pub out: Option<&'a Path>,
    /// Runtime for an ONNX teacher.
    pub runtime: &'a str,
    /// Where candle samples a model directory (the result is written from host memory).
    pub device: &'a Device,
}

/// Read the starting noise (`noise`, as the exported graph names it, or `x_T`, as the diffusers
/// fixtures do) and optional `class_labels` (float or int) from a safetensors file.
pub fn read_start(path: &Path) -> Result<(Tensor, Option<Tensor>)> {
    let m = checkpoint::load_tensors(path, &Device::Cpu)?;
    let x = m
        .get("noise")
        .or_else(|| m.get("x_T"))
        .ok_or_else(|| anyhow::anyhow!("{}: no tensor `noise` (or `x_T`)", path.display()))?
        .to_dtype(DType::F32)?;
    let labels = m
        .get("class_labels")
        .map(|l| integral_labels(l, path))
        .transpose()?;
    Ok((x, labels))
}

/// Class labels stored as float or int, checked to be whole numbers, as int64.
pub fn integral_labels(l: &Tensor, path: &Path) -> Result<Tensor> {
    let v = l.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if v.iter().any(|x| x.fract() != 0.0) {
        bail!("{}: class_labels must be whole numbers", path.display());
    }
    Ok(l.to_dtype(DType::F64)?.to_dtype(DType::I64)?)
}

pub fn sample(model: &Path, opts: &SampleOptions) -> Result<SampleReport> {
    let t0 = std::time::Instant::now();
    let teacher = Teacher::open_on(model, opts.runtime, opts.device)?;
    let plan = teacher.plan(opts.steps, opts.kind)?;
    let (noise, labels) = match opts.start {
        Start::Seeded { count, seed } => {
            seeded_noise(&teacher.sample_shape(), teacher.num_classes(), count, seed)?
        }
        Start::File(p) => {
            let (x, l) = read_start(p)?;
            // the file holds the starting state; the plan scales noise by init_sigma
            let x = if plan.init_sigma != 1.0 {
                x.affine(1.0 / plan.init_sigma as f64, 0.0)?
            } else {
                x
            };
            (x, l)
        }
    };
    let noise = noise.to_device(opts.device)?;
    let labels = labels.map(|l| l.to_device(opts.device)).transpose()?;
    let x = teacher
        .sample(&plan, &noise, labels.as_ref())?
        .to_device(&Device::Cpu)?;
    if let Some(png) = opts.png {
        write_png(&x, png)?;
    }
    if let Some(out) = opts.out {
        write_tensor(out, "image", &x)?;
    }
    Ok(SampleReport {
        png: opts.png.map(Path::to_path_buf),
        tensor: opts.out.map(Path::to_path_buf),
        steps: plan.steps.len(),
        count: x.dims()[0],
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// PNG of samples: a scatter plot for 2-D points, a grid for images.
pub fn write_png(x: &Tensor, png: &Path) -> Result<()> {
    if let Some(dir) = png.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsx::create_dir_all(dir)?;
    }
    let dims = x.dims().to_vec();
    let flat = x.flatten_all()?.to_vec1::<f32>()?;
    if dims.len() == 2 && dims[1] == 2 {
        let pts: Vec<[f32; 2]> = flat.chunks(2).map(|c| [c[0], c[1]]).collect();
        crate::plot::scatter(png, "samples", &pts, &[])?;
    } else if dims.len() == 4 {
        let cols = (dims[0] as f64).sqrt().ceil() as usize;
        crate::plot::image_grid(png, &flat, [dims[0], dims[1], dims[2], dims[3]], cols)?;
    } else {
        bail!("cannot draw samples of shape {dims:?} (2-D points or images only)");
    }
    Ok(())
}

/// One named tensor to a safetensors file, atomically.
pub fn write_tensor(out: &Path, name: &str, x: &Tensor) -> Result<()> {
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsx::create_dir_all(dir)?;
    }
    let mut m = std::collections::HashMap::new();
    m.insert(name.to_string(), x.clone());
    checkpoint::save_tensors(out, &m)
}

/// `flashctl teacher run`: one denoiser call on `x`, `t` (float or int) and optional
/// `class_labels` from `inputs`, written as `denoiser_out`.
pub fn teacher_run(model: &Path, inputs: &Path, out: &Path, runtime: &str) -> Result<Tensor> {
    let teacher = Teacher::open(model, runtime)?;
    let m = checkpoint::load_tensors(inputs, &Device::Cpu)?;
    let get = |k: &str| {
        m.get(k)
            .ok_or_else(|| anyhow::anyhow!("{}: no tensor `{k}`", inputs.display()))
    };
    let x = get("x")?.to_dtype(DType::F32)?;
    let t = get("t")?.to_dtype(DType::F32)?;
    let labels = m
        .get("class_labels")
        .map(|l| integral_labels(l, inputs))
        .transpose()?;
    let y = teacher.denoise(&x, &t, labels.as_ref())?;
    write_tensor(out, "denoiser_out", &y)?;
    Ok(y)
}
