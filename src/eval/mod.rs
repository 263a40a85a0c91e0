//! `flashctl eval`: sample quality of any model flashctl can run (teacher at N steps, or a
//! student at its own steps) against held-out data, optionally against a teacher on the same
//! noise. Every later method reuses it; docs/results.md is made of its JSON.

pub mod featurenet;
pub mod metrics;
pub mod per_step;

use crate::data::{self, Dataset};
use crate::export::seeded_noise;
use crate::teacher::Teacher;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use metrics::Points;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct EvalOptions {
    pub model: PathBuf,
    pub steps: Option<usize>,
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    /// Samples drawn from the model (and the teacher).
    pub count: usize,
    pub seed: u64,
    pub teacher: Option<PathBuf>,
    pub teacher_steps: usize,
    /// Where eval.json and the PNGs go (none: nothing is written).
    pub out: Option<PathBuf>,
    pub runtime: String,
    pub featurenet: Option<PathBuf>,
    /// Where candle samples (and the feature network runs); metrics are computed on the host.
    pub device: Device,
    /// Also the per-step errors against the teacher ([`per_step`]; needs `teacher`).
    pub per_step: bool,
}

#[derive(Debug, Serialize)]
pub struct SideReport {
    pub model: String,
    pub steps: usize,
    pub timesteps: Vec<usize>,
    pub metrics: BTreeMap<String, f64>,
    pub sample_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub count: usize,
    pub seed: u64,
    pub reference: String,
    pub model: SideReport,
    pub teacher: Option<SideReport>,
    /// PSNR (dB, range 2) of the model's samples against the teacher's on the same noise.
    pub psnr_vs_teacher: Option<f64>,
    pub png: Option<String>,
    pub notes: Vec<String>,
    /// `--per-step`: each step's error against the teacher's ODE from the same state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_step: Option<per_step::PerStepReport>,
}

/// Held-out reference data: fresh draws for 2-D sets, Fashion-MNIST's test split for images.
fn reference_set(o: &EvalOptions, shape: &[usize]) -> Result<(Vec<f32>, String)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed ^ 0x5EED_0E7A_1F00_D5E7);
    if o.dataset == "fashion-mnist" {
        let test =
            data::fashion_mnist_split(&data::fashion_mnist_dir(o.data_dir.as_deref()), "t10k")?;
        let Dataset::Images {
            pixels, shape: s, ..
        } = &test
        else {
            unreachable!()
        };
        if s[..] != shape[..] {
            bail!("the model makes samples of shape {shape:?}, fashion-mnist is {s:?}");
        }
        let per: usize = s.iter().product();
        let mut idx: Vec<usize> = (0..pixels.len() / per).collect();
        idx.shuffle(&mut rng);
        idx.truncate(o.count);
        let v = idx
            .iter()
            .flat_map(|&i| pixels[i * per..(i + 1) * per].iter().copied())
            .collect();
        return Ok((
            v,
            format!("fashion-mnist t10k, {} random test images", idx.len()),
        ));
    }
    let ds = data::open(&o.dataset, o.data_dir.as_deref(), shape.last().copied())?;
    if ds.sample_shape() != shape {
        bail!(
            "the model makes samples of shape {shape:?}, {} has {:?}",
            o.dataset,
            ds.sample_shape()
        );
    }
    let (v, _) = ds.batch(&mut rng, o.count);
    Ok((v, format!("{}: {} fresh draws", o.dataset, o.count)))
}

/// Sample `n` with the model's plan on seeded noise, in chunks.
fn draw(
    teacher: &Teacher,
    steps: Option<usize>,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<(Tensor, SideMeta)> {
    let plan = teacher.plan(steps, None)?;
    let t0 = std::time::Instant::now();
    let (noise, labels) = seeded_noise(&teacher.sample_shape(), teacher.num_classes(), n, seed)?;
    let chunk = if teacher.sample_shape().len() == 1 {
        4096
    } else {
        128
    };
    let mut parts = vec![];
    for s in (0..n).step_by(chunk) {
        let m = (n - s).min(chunk);
        let l = labels
            .as_ref()
            .map(|l| l.narrow(0, s, m)?.to_device(device))
            .transpose()?;
        let x = noise.narrow(0, s, m)?.to_device(device)?;
        parts.push(
            teacher
                .sample(&plan, &x, l.as_ref())?
                .to_device(&Device::Cpu)?,
        );
    }
    Ok((
        Tensor::cat(&parts, 0)?,
        SideMeta {
            steps: plan.steps.len(),
            timesteps: plan.timesteps.clone(),
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}

struct SideMeta {
    steps: usize,
    timesteps: Vec<usize>,
    seconds: f64,
}

fn flat(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.flatten_all()?.to_vec1::<f32>()?)
}

/// The metrics of a sample set against the reference.
fn score(
    x: &Tensor,
    reference: &[f32],
    featurenet: Option<&featurenet::FeatureNet>,
    ref_features: Option<&[f32]>,
    seed: u64,
) -> Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    let d: usize = x.dims()[1..].iter().product();
    let xs = flat(x)?;
    if x.rank() == 2 {
        let (a, b) = (Points::new(&xs, d), Points::new(reference, d));
        m.insert("swd".into(), metrics::swd(&a, &b, 512, seed));
        // MMD is O(n^2): at most 2000 points per side
        let cap = |v: &[f32]| v.len().min(2000 * d);
        let (a2, b2) = (
            Points::new(&xs[..cap(&xs)], d),
            Points::new(&reference[..cap(reference)], d),
        );
        m.insert(
            "mmd".into(),
            metrics::mmd(&a2, &b2, &[0.05, 0.1, 0.2, 0.5, 1.0]),
        );
    } else if let (Some(net), Some(rf)) = (featurenet, ref_features) {
        let f = net.features(x)?;
        let k = featurenet::FEATURE_DIM;
        let (a, b) = (Points::new(&f, k), Points::new(rf, k));
        m.insert("fd".into(), metrics::frechet_distance(&a, &b));
        let (p, r) = metrics::precision_recall(&b, &a, 3);
        m.insert("precision".into(), p);
        m.insert("recall".into(), r);
    }
    Ok(m)
}

pub fn eval(o: &EvalOptions) -> Result<EvalReport> {
    if o.count < 10 {
        bail!("--count must be at least 10");
    }
    if let Some(out) = &o.out {
        crate::out_dir::prepare_report(out, "--out")?;
    }
    let model = Teacher::open_on(&o.model, &o.runtime, &o.device)?;
    let shape = model.sample_shape();
    let (reference, ref_desc) = reference_set(o, &shape)?;
    let n_ref = reference.len() / shape.iter().product::<usize>();
    let mut notes = vec![];
    let net = if shape.len() == 3 && o.dataset == "fashion-mnist" {
        Some(featurenet::FeatureNet::load_on(
            o.featurenet
                .as_deref()
                .unwrap_or(&featurenet::default_dir()),
            &o.device,
        )?)
    } else {
        if shape.len() == 3 {
            notes.push("fd/precision/recall need Fashion-MNIST-shaped images (FD-FMNIST)".into());
        }
        None
    };
    let ref_features = match &net {
        Some(n) => {
            let t = Tensor::from_slice(
                &reference,
                [&[n_ref][..], &shape[..]].concat(),
                &Device::Cpu,
            )?;
            Some(n.features(&t)?)
        }
        None => None,
    };
    let (x, meta) = draw(&model, o.steps, o.count, o.seed, &o.device)?;
    let side = SideReport {
        model: o.model.display().to_string(),
        steps: meta.steps,
        timesteps: meta.timesteps,
        metrics: score(
            &x,
            &reference,
            net.as_ref(),
            ref_features.as_deref(),
            o.seed,
        )?,
        sample_seconds: meta.seconds,
    };
    if o.per_step && o.teacher.is_none() {
        bail!(crate::validation::BadInput(
            "--per-step compares each step with the teacher: pass --teacher".into()
        ));
    }
    let mut per_step_report = None;
    let (teacher_side, psnr, tx) = match &o.teacher {
        Some(tp) => {
            let t = Teacher::open_on(tp, &o.runtime, &o.device)?;
            if t.sample_shape() != shape || t.num_classes() != model.num_classes() {
                bail!("--teacher makes samples of another shape or class set than --model");
            }
            if o.per_step {
                per_step_report = Some(per_step::per_step(
                    &model,
                    &t,
                    o.count,
                    o.seed,
                    o.teacher_steps,
                    &o.device,
                )?);
            }
            let (tx, tmeta) = draw(&t, Some(o.teacher_steps), o.count, o.seed, &o.device)?;
            let psnr = metrics::psnr(&flat(&x)?, &flat(&tx)?, 2.0);
            let side = SideReport {
                model: tp.display().to_string(),
                steps: tmeta.steps,
                timesteps: tmeta.timesteps,
                metrics: score(
                    &tx,
                    &reference,
                    net.as_ref(),
                    ref_features.as_deref(),
                    o.seed,
                )?,
                sample_seconds: tmeta.seconds,
            };
            (Some(side), Some(psnr), Some(tx))
        }
        None => (None, None, None),
    };
    let png = match &o.out {
        Some(dir) => write_png(dir, &x, tx.as_ref(), &reference, &shape)?,
        None => None,
    };
    let report = EvalReport {
        dataset: o.dataset.clone(),
        count: o.count,
        seed: o.seed,
        reference: ref_desc,
        model: side,
        teacher: teacher_side,
        psnr_vs_teacher: psnr,
        png: png.map(|p| p.display().to_string()),
        notes,
        per_step: per_step_report,
    };
    if let Some(dir) = &o.out {
        let path = dir.join("eval.json");
        crate::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Images: a grid with the teacher's samples in the top rows and the model's below, same
/// noise column by column. 2-D: the model's points over the reference's.
fn write_png(
    dir: &Path,
    x: &Tensor,
    teacher: Option<&Tensor>,
    reference: &[f32],
    shape: &[usize],
) -> Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if shape.len() == 1 && shape[0] == 2 {
        let pts: Vec<[f32; 2]> = flat(x)?.chunks(2).map(|c| [c[0], c[1]]).collect();
        let refp: Vec<[f32; 2]> = reference.chunks(2).map(|c| [c[0], c[1]]).collect();
        let p = dir.join("samples_vs_data.png");
        crate::plot::scatter(&p, "samples over the data", &pts, &refp)?;
        if let Some(t) = teacher {
            let tp: Vec<[f32; 2]> = flat(t)?.chunks(2).map(|c| [c[0], c[1]]).collect();
            crate::plot::scatter(
                &dir.join("teacher_vs_data.png"),
                "teacher samples over the data",
                &tp,
                &refp,
            )?;
        }
        return Ok(Some(p));
    }
    if shape.len() != 3 {
        return Ok(None);
    }
    let k = x.dims()[0].min(32);
    let mut data = vec![];
    let mut n = 0;
    if let Some(t) = teacher {
        data.extend(&flat(&t.narrow(0, 0, k)?)?);
        n += k;
    }
    data.extend(&flat(&x.narrow(0, 0, k)?)?);
    n += k;
    let p = dir.join(if teacher.is_some() {
        "teacher_top_model_bottom.png"
    } else {
        "samples.png"
    });
    crate::plot::image_grid(&p, &data, [n, shape[0], shape[1], shape[2]], 8)?;
    Ok(Some(p))
}

/// The human table.
pub fn print_report(r: &EvalReport) {
    println!(
        "eval on {} ({} samples, seed {}), reference: {}",
        r.dataset, r.count, r.seed, r.reference
    );
    let line = |who: &str, s: &SideReport| {
        let m: Vec<String> = s
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.5}"))
            .collect();
        println!(
            "  {who:<8} {:>3} steps {:>8.2}s  {}   ({})",
            s.steps,
            s.sample_seconds,
            m.join("  "),
            s.model
        );
    };
    line("model", &r.model);
    if let Some(t) = &r.teacher {
        line("teacher", t);
    }
    if let Some(p) = r.psnr_vs_teacher {
        println!("  psnr_vs_teacher {p:.2} dB");
    }
    if let Some(p) = &r.png {
        println!("  png -> {p}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    if let Some(p) = &r.per_step {
        per_step::print(p);
    }
}
