//! Teacher training in candle: DDPM loss, AdamW, EMA, periodic atomic checkpoints, `--resume`,
//! progress bar, loss log (CSV) and loss curve (PNG).
//!
//! Determinism: each iteration draws its batch, timesteps and noise from an RNG seeded by
//! (seed, iteration), so a resumed run continues exactly as an uninterrupted one would.

use crate::checkpoint::{self, ModelConfig, SamplerDefaults, SCHEMA_VERSION};
use crate::data::Dataset;
use crate::models::{Denoiser, MlpConfig, UnetConfig};
use crate::sampler::SamplerKind;
use crate::schedule::{Prediction, ScheduleConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use flashctl_graphs::EagerOps;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
}

/// Architecture and training defaults for a dataset shape and preset.
pub fn preset_for(ds: &Dataset, preset: Preset) -> (Denoiser, TrainOptions) {
    let shape = ds.sample_shape();
    let opts = |iters, batch, lr| TrainOptions {
        iters,
        batch,
        lr,
        weight_decay: 0.0,
        ema_decay: 0.999,
        checkpoint_every: 500,
        seed: 0,
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
            num_classes: ds.num_classes(),
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
        num_class_embeds: ds.num_classes(),
        add_attention: true,
        time_embedding_dim: None,
        attn_norm_num_groups: None,
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

/// AdamW with state kept as plain tensors so it can be checkpointed and resumed.
struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
    lr: f64,
    wd: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

impl AdamW {
    fn new(vars: Vec<(String, Var)>, lr: f64, wd: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let v2 = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            m,
            v: v2,
            step: 0,
            lr,
            wd,
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - BETA1.powi(self.step as i32);
        let bc2 = 1.0 - BETA2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            self.m[i] = ((&self.m[i] * BETA1)? + (g * (1.0 - BETA1))?)?;
            self.v[i] = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + ADAM_EPS)?)?;
            let theta = ((var.as_tensor() * (1.0 - self.lr * self.wd))? - (upd * self.lr)?)?;
            var.set(&theta)?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TrainState {
    step: usize,
    options: TrainOptions,
}

pub struct TrainReport {
    pub first_loss: f32,
    pub final_loss: f32,
    pub iters: usize,
    pub out_dir: std::path::PathBuf,
}

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Train (or resume) a teacher into `out`.
pub fn train_teacher(
    ds: &Dataset,
    denoiser: Denoiser,
    schedule: ScheduleConfig,
    opts: TrainOptions,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<TrainReport> {
    let device = Device::Cpu;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (varmap, vb) = crate::seeded_vars::SeededVars::new(opts.seed).into_var_builder(&device);
    let ops = EagerOps::new(vb);
    let shape = ds.sample_shape();
    let per: usize = shape.iter().product();
    let classes = denoiser.num_classes();
    let class_tensor = |y: &Option<Vec<i64>>, b: usize| -> Result<Option<Tensor>> {
        Ok(match (classes, y) {
            (Some(_), Some(y)) => Some(Tensor::from_slice(y, b, &device)?),
            (Some(_), None) => Some(Tensor::zeros(b, DType::I64, &device)?),
            _ => None,
        })
    };
    // 1. create the parameters with one forward pass (the model declares them as it runs)
    {
        let mut dims = vec![1];
        dims.extend(&shape);
        let x = Tensor::zeros(dims, DType::F32, &device)?;
        let t = Tensor::zeros(1, DType::F32, &device)?;
        let y = class_tensor(&Some(vec![0]), 1)?;
        denoiser.forward(&ops, &x, &t, y.as_ref())?;
    }
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut adam = AdamW::new(vars.clone(), opts.lr, opts.weight_decay)?;
    let mut ema: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let mut start = 0;
    let mut losses: Vec<(usize, f32)> = vec![];
    // 2. resume from the last checkpoint
    let state_path = out.join("train_state.safetensors");
    let state_json = out.join("train_state.json");
    if resume {
        if !state_path.exists() {
            bail!(
                "--resume: no checkpoint in {} (train_state.safetensors missing)",
                out.display()
            );
        }
        let st: TrainState = serde_json::from_str(&std::fs::read_to_string(&state_json)?)
            .with_context(|| format!("reading {}", state_json.display()))?;
        let saved = checkpoint::load_tensors(&state_path, &device)?;
        let get = |k: &str| {
            saved
                .get(k)
                .cloned()
                .with_context(|| format!("{}: tensor `{k}` missing", state_path.display()))
        };
        for (i, (name, var)) in vars.iter().enumerate() {
            var.set(&get(&format!("param.{name}"))?)?;
            adam.m[i] = get(&format!("adam_m.{name}"))?;
            adam.v[i] = get(&format!("adam_v.{name}"))?;
            ema.insert(name.clone(), get(&format!("ema.{name}"))?);
        }
        adam.step = st.step;
        start = st.step;
        losses = read_loss_log(&out.join("loss.csv"))?
            .into_iter()
            .filter(|(s, _)| *s <= start)
            .collect();
    }
    let ac = schedule.alphas_cumprod();
    let pb = if progress {
        indicatif::ProgressBar::new(opts.iters as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
            .unwrap(),
    );
    pb.set_position(start as u64);
    let save = |step: usize,
                adam: &AdamW,
                ema: &HashMap<String, Tensor>,
                losses: &[(usize, f32)]|
     -> Result<()> {
        let mut st = HashMap::new();
        for (i, (name, var)) in vars.iter().enumerate() {
            st.insert(format!("param.{name}"), var.as_tensor().clone());
            st.insert(format!("adam_m.{name}"), adam.m[i].clone());
            st.insert(format!("adam_v.{name}"), adam.v[i].clone());
            st.insert(format!("ema.{name}"), ema[name].clone());
        }
        checkpoint::save_tensors(&state_path, &st)?;
        checkpoint::save_tensors(&out.join(checkpoint::WEIGHTS_FILE), ema)?;
        checkpoint::write_atomic(
            &state_json,
            serde_json::to_string_pretty(&TrainState {
                step,
                options: opts.clone(),
            })?
            .as_bytes(),
        )?;
        let cfg = ModelConfig {
            schema_version: SCHEMA_VERSION,
            role: "teacher".into(),
            dataset: ds.name(),
            denoiser: denoiser.clone(),
            schedule: schedule.clone(),
            sampler: SamplerDefaults {
                kind: SamplerKind::Ddim,
                steps: 50,
                timesteps: None,
                noise_correction: false,
            },
        };
        checkpoint::save_config(out, &cfg)?;
        let csv: String = std::iter::once("step,loss\n".to_string())
            .chain(losses.iter().map(|(s, l)| format!("{s},{l}\n")))
            .collect();
        checkpoint::write_atomic(&out.join("loss.csv"), csv.as_bytes())?;
        Ok(())
    };
    // 3. the loop
    for step in start..opts.iters {
        let mut rng = StdRng::seed_from_u64(
            opts.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(step as u64),
        );
        let b = opts.batch;
        let (x0, y) = ds.batch(&mut rng, b);
        let ts: Vec<usize> = (0..b).map(|_| rng.gen_range(0..ac.len())).collect();
        let eps = randn(&mut rng, b * per);
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1, shape.len()));
        let sa: Vec<f32> = ts.iter().map(|&t| ac[t].sqrt()).collect();
        let sb: Vec<f32> = ts.iter().map(|&t| (1.0 - ac[t]).sqrt()).collect();
        let mut xshape = vec![b];
        xshape.extend(&shape);
        let x0 = Tensor::from_vec(x0, xshape.clone(), &device)?;
        let eps = Tensor::from_vec(eps, xshape, &device)?;
        let sa = Tensor::from_vec(sa, bshape.clone(), &device)?;
        let sb = Tensor::from_vec(sb, bshape, &device)?;
        let xt = (x0.broadcast_mul(&sa)? + eps.broadcast_mul(&sb)?)?;
        let target = match schedule.prediction_type {
            Prediction::Epsilon => eps.clone(),
            Prediction::V => (eps.broadcast_mul(&sa)? - x0.broadcast_mul(&sb)?)?,
            Prediction::X0 => x0.clone(),
        };
        let t = Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, &device)?;
        let yt = class_tensor(&y, b)?;
        let pred = denoiser.forward(&ops, &xt, &t, yt.as_ref())?;
        let loss = (pred - target)?.sqr()?.mean_all()?;
        let lv = loss.to_scalar::<f32>()?;
        if !lv.is_finite() {
            bail!("loss became {lv} at iteration {step}; lower --lr");
        }
        let grads = loss.backward()?;
        adam.step(&grads)?;
        let decay = opts
            .ema_decay
            .min((1.0 + step as f64) / (10.0 + step as f64));
        for (name, var) in &vars {
            let e = ((&ema[name] * decay)? + (var.as_tensor() * (1.0 - decay))?)?;
            ema.insert(name.clone(), e);
        }
        losses.push((step + 1, lv));
        pb.set_message(format!("loss {lv:.4}"));
        pb.inc(1);
        let done = step + 1;
        if done % opts.checkpoint_every == 0 || done == opts.iters {
            save(done, &adam, &ema, &losses)?;
        }
    }
    if start >= opts.iters {
        save(start, &adam, &ema, &losses)?;
    }
    pb.finish_and_clear();
    crate::plot::loss_curve(&out.join("loss.png"), &losses)?;
    let first = losses.first().map(|l| l.1).unwrap_or(f32::NAN);
    let n = losses.len().clamp(1, 50);
    let last = losses.iter().rev().take(n).map(|l| l.1).sum::<f32>() / n as f32;
    Ok(TrainReport {
        first_loss: first,
        final_loss: last,
        iters: opts.iters,
        out_dir: out.to_path_buf(),
    })
}

fn read_loss_log(path: &Path) -> Result<Vec<(usize, f32)>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (s, v) = l.split_once(',')?;
            Some((s.parse().ok()?, v.parse().ok()?))
        })
        .collect())
}
