//! Teacher training in candle: presets, the default schedule, and the DDPM loss run by the shared
//! loop in `train_loop` (AdamW, EMA, checkpoints, resume, loss curves).

use crate::checkpoint::{ModelConfig, SamplerDefaults, SCHEMA_VERSION};
use crate::data::Dataset;
use crate::models::{Denoiser, MlpConfig, UnetConfig};
use crate::schedule::{Prediction, ScheduleConfig};
use crate::train_loop::{train_loop, LoopSpec};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Small,
    Base,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "base" => Ok(Preset::Base),
            o => Err(format!("unknown preset `{o}` (tiny, small, base)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub iters: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub ema_decay: f64,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Stop (with a checkpoint, resumable) after the iteration that passes this many seconds of
    /// loop time: fits a run into a lease of fixed length (docs/gpu.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<f64>,
}

/// Architecture and training defaults for a dataset shape and preset.
pub fn preset_for(ds: &Dataset, preset: Preset) -> (Denoiser, TrainOptions) {
    preset_for_shape(&ds.sample_shape(), ds.num_classes(), preset)
}

/// Architecture and training defaults for a sample shape ([2] or [C, H, W]) and class count.
pub fn preset_for_shape(
    shape: &[usize],
    num_classes: Option<usize>,
    preset: Preset,
) -> (Denoiser, TrainOptions) {
    let opts = |iters, batch, lr| TrainOptions {
        iters,
        batch,
        lr,
        weight_decay: 0.0,
        ema_decay: 0.999,
        checkpoint_every: 500,
        seed: 0,
        time_budget_s: None,
    };
    if shape.len() == 1 {
        let (hidden, layers, iters) = match preset {
            Preset::Tiny => (64, 2, 300),
            Preset::Small => (128, 3, 6000),
            Preset::Base => (256, 4, 10000),
        };
        let d = Denoiser::Mlp(MlpConfig {
            data_dim: shape[0],
            hidden,
            layers,
            time_dim: 32,
            num_classes,
        });
        return (d, opts(iters, 256, 2e-3));
    }
    let (c, s) = (shape[0], shape[1]);
    let (boc, groups, lpb, iters, batch) = match preset {
        Preset::Tiny => (vec![8, 16], 4, 1, 40, 8),
        Preset::Small => (vec![32, 64], 8, 1, 3000, 32),
        Preset::Base => (vec![64, 128, 128], 32, 2, 20000, 64),
    };
    let n = boc.len();
    let mut down = vec!["DownBlock2D".to_string(); n];
    let mut up = vec!["UpBlock2D".to_string(); n];
    down[n - 1] = "AttnDownBlock2D".into();
    up[0] = "AttnUpBlock2D".into();
    let d = Denoiser::Unet(UnetConfig {
        sample_size: s,
        in_channels: c,
        out_channels: c,
        center_input_sample: false,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        down_block_types: down,
        up_block_types: up,
        block_out_channels: boc,
        layers_per_block: lpb,
        mid_block_scale_factor: 1.0,
        downsample_padding: 1,
        norm_num_groups: groups,
        norm_eps: 1e-5,
        attention_head_dim: Some(8),
        resnet_time_scale_shift: "default".into(),
        num_class_embeds: num_classes,
        add_attention: true,
        time_embedding_dim: None,
        attn_norm_num_groups: None,
        cross_attention: None,
    });
    (d, opts(iters, batch, 5e-4))
}

/// The schedule flashctl trains its own teachers with: v-prediction, because epsilon prediction
/// divides by sqrt(alpha_bar) ~ 0.006 at t = 999, amplifying any float error ~150x in the first
/// step of a few-step sampler; images clip x0 to [-1, 1] like diffusers.
pub fn default_schedule(ds: &Dataset) -> ScheduleConfig {
    ScheduleConfig {
        prediction_type: Prediction::V,
        clip_sample: ds.sample_shape().len() > 1,
        ..ScheduleConfig::default()
    }
}

pub use crate::train_loop::TrainReport;

/// Train (or resume) a teacher into `out` with the DDPM loss on the model's parameterisation.
#[allow(clippy::too_many_arguments)] // the run's what (data, model, options) and where (out, device)
pub fn train_teacher(
    ds: &Dataset,
    denoiser: Denoiser,
    schedule: ScheduleConfig,
    opts: TrainOptions,
    out: &Path,
    resume: bool,
    progress: bool,
    device: &Device,
) -> Result<TrainReport> {
    let shape = ds.sample_shape();
    let per: usize = shape.iter().product();
    let classes = denoiser.num_classes();
    let config = ModelConfig {
        schema_version: SCHEMA_VERSION,
        role: "teacher".into(),
        dataset: ds.name(),
        denoiser: denoiser.clone(),
        schedule: schedule.clone(),
        sampler: SamplerDefaults::teacher(),
        distillation: None,
    };
    let ac = schedule.alphas_cumprod();
    let b = opts.batch;
    let spec = LoopSpec {
        out,
        opts: opts.clone(),
        config,
        init: None,
        method: serde_json::json!({"method": "ddpm"}),
        resume,
        progress,
        train_only: None,
        device: device.clone(),
    };
    train_loop(spec, |ops, rng, _step| {
        let device = ops.device();
        let (x0, y) = ds.batch(rng, b);
        let ts: Vec<usize> = (0..b).map(|_| rng.gen_range(0..ac.len())).collect();
        let eps = randn(rng, b * per);
        let mut xshape = vec![b];
        xshape.extend(&shape);
        let x0 = Tensor::from_vec(x0, xshape.clone(), device)?;
        let eps = Tensor::from_vec(eps, xshape, device)?;
        let sa = per_sample(
            &ts.iter().map(|&t| ac[t].sqrt()).collect::<Vec<_>>(),
            shape.len(),
            device,
        )?;
        let sb = per_sample(
            &ts.iter().map(|&t| (1.0 - ac[t]).sqrt()).collect::<Vec<_>>(),
            shape.len(),
            device,
        )?;
        let xt = (x0.broadcast_mul(&sa)? + eps.broadcast_mul(&sb)?)?;
        let target = match schedule.prediction_type {
            Prediction::Epsilon => eps.clone(),
            Prediction::V => (eps.broadcast_mul(&sa)? - x0.broadcast_mul(&sb)?)?,
            Prediction::X0 => x0.clone(),
        };
        let t = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, device)?;
        let yt = match (classes, y) {
            (Some(_), Some(y)) => Some(Tensor::from_vec(y, b, device)?),
            (Some(_), None) => Some(Tensor::zeros(b, DType::I64, device)?),
            _ => None,
        };
        let pred = denoiser.forward(ops, &xt, &t, yt.as_ref())?;
        Ok((pred - target)?.sqr()?.mean_all()?)
    })
}

/// `flashctl teacher train`: the preset for the dataset, the flags over it, then
/// [`train_teacher`] (with a progress bar when `progress`).
pub fn run_command(a: &crate::cli::TrainArgs, progress: bool) -> Result<TrainReport> {
    let preset: Preset = a.preset.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    crate::out_dir::prepare(
        &a.out,
        "--out",
        crate::out_dir::Existing::from_flags(a.force, a.resume),
    )?;
    let ds = crate::data::open(&a.dataset, a.data_dir.as_deref(), a.image_size)?;
    let (denoiser, mut opts) = preset_for(&ds, preset);
    if let Some(i) = a.iters {
        opts.iters = i;
    }
    if let Some(b) = a.batch {
        opts.batch = b;
    }
    if let Some(lr) = a.lr {
        opts.lr = lr;
    }
    if let Some(c) = a.checkpoint_every {
        opts.checkpoint_every = c;
    }
    opts.seed = a.seed;
    opts.time_budget_s = a.time_budget;
    let device = crate::device::open(&a.device)?;
    train_teacher(
        &ds,
        denoiser,
        default_schedule(&ds),
        opts,
        &a.out,
        a.resume,
        progress,
        &device,
    )
}

/// Per-sample scalars as a [B, 1, ...] tensor on `device` that broadcasts over samples of rank
/// `rank`.
pub fn per_sample(v: &[f32], rank: usize, device: &Device) -> Result<Tensor> {
    let mut shape = vec![v.len()];
    shape.extend(std::iter::repeat_n(1, rank));
    Ok(Tensor::from_vec(v.to_vec(), shape, device)?)
}

pub fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
