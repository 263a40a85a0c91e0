//! `flashctl distill`: turn a teacher into a few-step student. Methods share the teacher
//! abstraction (`teacher::Teacher`), the training loop (`train_loop`) and the student model
//! directory format, so `sample`, `eval` and `export` take a student like any model.

pub mod adversarial;
pub mod command;
pub mod imagine_flash;
pub mod kdm;

use crate::checkpoint::{ModelConfig, SamplerDefaults, SCHEMA_VERSION};
use crate::data::Dataset;
use crate::models::Denoiser;
use crate::sampler::SamplerKind;
use crate::teacher::Teacher;
use crate::train::{randn, TrainOptions, TrainReport};
use crate::train_loop::{train_loop, LoopSpec};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use imagine_flash::{ImagineFlashOptions, Inputs, IterDraw};
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;

/// Where the student's weights start.
pub enum StudentInit {
    /// The teacher's architecture and (EMA) weights.
    FromTeacher {
        denoiser: Denoiser,
        weights: HashMap<String, Tensor>,
    },
    /// A fresh architecture drawn from the seeded RNG (ONNX teachers, smaller students).
    Scratch(Denoiser),
}

impl StudentInit {
    pub fn denoiser(&self) -> &Denoiser {
        match self {
            StudentInit::FromTeacher { denoiser, .. } => denoiser,
            StudentInit::Scratch(d) => d,
        }
    }
}

/// Training defaults for distillation by sample shape: 2-D points or images.
pub fn default_train_options(sample_shape: &[usize]) -> TrainOptions {
    let points = sample_shape.len() == 1;
    TrainOptions {
        iters: if points { 2000 } else { 300 },
        batch: if points { 256 } else { 16 },
        lr: if points { 2e-4 } else { 1e-4 },
        weight_decay: 0.0,
        ema_decay: if points { 0.999 } else { 0.99 },
        checkpoint_every: if points { 500 } else { 50 },
        seed: 0,
        time_budget_s: None,
    }
}

/// Distil `teacher` with Imagine Flash into `out`.
#[allow(clippy::too_many_arguments)]
pub fn imagine_flash(
    teacher: &Teacher,
    teacher_source: &str,
    student: StudentInit,
    dataset: Option<&Dataset>,
    dataset_name: String,
    o: ImagineFlashOptions,
    train: TrainOptions,
    out: &Path,
    resume: bool,
    progress: bool,
    device: &Device,
) -> Result<TrainReport> {
    let schedule = teacher.schedule().clone();
    imagine_flash::check_options(&o, &schedule)?;
    let plan = imagine_flash::student_plan(&schedule, &o)?;
    let shape = teacher.sample_shape();
    let classes = teacher.num_classes();
    let d = student.denoiser().clone();
    if d.sample_shape() != shape || d.num_classes() != classes {
        bail!(
            "student shape {:?} / classes {:?} do not match the teacher's {:?} / {:?}",
            d.sample_shape(),
            d.num_classes(),
            shape,
            classes
        );
    }
    if o.inputs == Inputs::Forward || o.adversarial.is_some() {
        match dataset {
            None => bail!("--inputs forward and --adversarial need training data: pass --dataset"),
            Some(ds) if ds.sample_shape() != shape => bail!(
                "dataset {} has samples of shape {:?}, the teacher {:?}",
                ds.name(),
                ds.sample_shape(),
                shape
            ),
            _ => {}
        }
    }
    let method = serde_json::json!({
        "method": "imagine-flash",
        "options": o,
        "teacher": teacher_source,
    });
    let config = ModelConfig {
        schema_version: SCHEMA_VERSION,
        role: "student".into(),
        dataset: dataset_name,
        denoiser: d.clone(),
        schedule: schedule.clone(),
        sampler: SamplerDefaults {
            kind: SamplerKind::Ddim,
            steps: o.steps,
            timesteps: Some(plan.timesteps.clone()),
            noise_correction: o.noise_correction,
        },
        distillation: Some(method.clone()),
    };
    let init = match student {
        StudentInit::FromTeacher { weights, .. } => Some(weights),
        StudentInit::Scratch(_) => None,
    };
    let per: usize = shape.iter().product();
    let mut xshape = vec![train.batch];
    xshape.extend(&shape);
    let b = train.batch;
    let k = o.steps;
    let sample_shape = shape.clone();
    let train_only: Option<crate::train_loop::TrainOnlyParams> = o.adversarial.map(|_| {
        Box::new(move |ops: &flashctl_graphs::EagerOps| -> Result<()> {
            let mut s = vec![1];
            s.extend(&sample_shape);
            let x = Tensor::zeros(s, candle_core::DType::F32, ops.device())?;
            adversarial::declare(ops, &x)
        }) as crate::train_loop::TrainOnlyParams
    });
    let spec = LoopSpec {
        out,
        opts: train,
        config,
        init,
        method,
        resume,
        progress,
        train_only,
        device: device.clone(),
    };
    let teacher_fn = |x: &Tensor, t: &Tensor, l: Option<&Tensor>| teacher.denoise(x, t, l);
    let teacher_sample =
        |p: &crate::sampler::SamplerPlan, x: &Tensor, l: Option<&Tensor>| teacher.sample(p, x, l);
    train_loop(spec, |ops, rng, _step| {
        let idx: Vec<usize> = (0..b).map(|_| rng.gen_range(0..k)).collect();
        let dev = ops.device();
        let noise = Tensor::from_vec(randn(rng, b * per), xshape.clone(), dev)?;
        let mut labels = classes
            .map(|c| imagine_flash::random_labels(rng, b, c, dev))
            .transpose()?;
        let (mut x0_data, mut forward_eps) = (None, None);
        if o.inputs == Inputs::Forward {
            let ds = dataset.expect("checked above");
            let (x0, y) = ds.batch(rng, b);
            x0_data = Some(Tensor::from_vec(x0, xshape.clone(), dev)?);
            forward_eps = Some(Tensor::from_vec(randn(rng, b * per), xshape.clone(), dev)?);
            if let (Some(_), Some(y)) = (classes, y) {
                labels = Some(Tensor::from_vec(y, b, dev)?);
            }
        }
        let srl_eps = Tensor::from_vec(randn(rng, b * per), xshape.clone(), dev)?;
        let real = match (o.adversarial, dataset) {
            (Some(_), Some(ds)) => Some(Tensor::from_vec(ds.batch(rng, b).0, xshape.clone(), dev)?),
            _ => None,
        };
        let draw = IterDraw {
            noise,
            labels,
            idx,
            x0_data,
            forward_eps,
            srl_eps,
            real,
        };
        imagine_flash::loss(
            ops,
            &d,
            &plan,
            &schedule,
            &o,
            &draw,
            &teacher_fn,
            &teacher_sample,
        )
    })
}
