//! `flashctl sample`: eager sampling to a PNG (grid for images, scatter for 2-D) and optionally
//! the raw tensor as safetensors.

use crate::checkpoint;
use crate::export::{eager_sample, reference_inputs};
use crate::sampler::{self, SamplerKind};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

pub struct SampleReport {
    pub png: PathBuf,
    pub tensor: Option<PathBuf>,
    pub steps: usize,
    pub seconds: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn sample(
    model_dir: &Path,
    steps: Option<usize>,
    kind: Option<SamplerKind>,
    count: usize,
    seed: u64,
    png: &Path,
    out: Option<&Path>,
) -> Result<SampleReport> {
    let t0 = std::time::Instant::now();
    let model = checkpoint::load(model_dir, &Device::Cpu)?;
    let steps = steps.unwrap_or(model.config.sampler.steps);
    let kind = kind.unwrap_or(model.config.sampler.kind);
    let plan = sampler::plan(kind, &model.config.schedule, steps)
        .map_err(|e| anyhow::anyhow!("--steps {steps}: {e}"))?;
    let (noise, labels) = reference_inputs(&model, count, seed)?;
    let x = eager_sample(&model, &plan, &noise, labels.as_ref())?;
    write_outputs(&x, png, out)?;
    Ok(SampleReport {
        png: png.to_path_buf(),
        tensor: out.map(Path::to_path_buf),
        steps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// PNG (scatter or grid) plus, optionally, the raw samples as `sample` in a safetensors file.
pub fn write_outputs(x: &Tensor, png: &Path, out: Option<&Path>) -> Result<()> {
    if let Some(dir) = png.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let dims = x.dims().to_vec();
    let flat = x.flatten_all()?.to_vec1::<f32>()?;
    if dims.len() == 2 && dims[1] == 2 {
        let pts: Vec<[f32; 2]> = flat.chunks(2).map(|c| [c[0], c[1]]).collect();
        crate::plot::scatter(png, &pts, &[])?;
    } else if dims.len() == 4 {
        let cols = (dims[0] as f64).sqrt().ceil() as usize;
        crate::plot::image_grid(png, &flat, [dims[0], dims[1], dims[2], dims[3]], cols)?;
    }
    if let Some(out) = out {
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut m = std::collections::HashMap::new();
        m.insert("sample".to_string(), x.clone());
        checkpoint::save_tensors(out, &m)?;
    }
    Ok(())
}
