//! The training loop every method shares (teacher DDPM training, Imagine Flash, KDM): AdamW,
//! EMA, periodic atomic checkpoints, `--resume`, progress bar, loss log (CSV) and curve (PNG).
//!
//! Determinism: iteration `i` gets an RNG seeded by (seed, i), so a resumed run continues
//! exactly as an uninterrupted one would. The method supplies only its loss.

use crate::checkpoint::{self, ModelConfig};
use crate::train::TrainOptions;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use flashctl_graphs::EagerOps;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// The method and its options; a resume with different ones is refused.
    #[serde(default)]
    method: serde_json::Value,
}

pub struct TrainReport {
    pub first_loss: f32,
    pub final_loss: f32,
    pub iters: usize,
    pub out_dir: PathBuf,
    /// Iterations run by this invocation (fewer than `iters` after a resume or a time budget).
    pub iters_run: usize,
    /// Iterations done in all (== `iters` unless the time budget stopped the run).
    pub iters_done: usize,
    /// Wall time of those iterations (loss, backward, AdamW, EMA, checkpoints), in seconds.
    pub loop_seconds: f64,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

/// What to train and where.
pub struct LoopSpec<'a> {
    pub out: &'a Path,
    pub opts: TrainOptions,
    /// Written as `config.json` beside every checkpoint of the EMA weights.
    pub config: ModelConfig,
    /// Initial parameter values by name (a student starts from its teacher); others are drawn
    /// from the seeded RNG with torch's default inits.
    pub init: Option<HashMap<String, Tensor>>,
    /// The method and its options, recorded in train_state.json.
    pub method: serde_json::Value,
    pub resume: bool,
    pub progress: bool,
    /// Declares training-only parameters (KDM's x0 encoder, a discriminator) after the model's
    /// own: they are optimised and checkpointed in train_state but not written to
    /// model.safetensors.
    pub train_only: Option<TrainOnlyParams<'a>>,
    /// Where parameters, optimiser state and every loss tensor live.
    pub device: Device,
}

pub type TrainOnlyParams<'a> = Box<dyn Fn(&EagerOps) -> Result<()> + 'a>;

/// The RNG of iteration `step`.
pub fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(step as u64),
    )
}

/// Run the loop; `loss` builds the scalar loss of one iteration with the trainable model ops.
pub fn train_loop<F>(spec: LoopSpec, mut loss: F) -> Result<TrainReport>
where
    F: FnMut(&EagerOps, &mut StdRng, usize) -> Result<Tensor>,
{
    let LoopSpec {
        out,
        opts,
        config,
        init,
        method,
        resume,
        progress,
        train_only,
        device,
    } = spec;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut seeded = crate::seeded_vars::SeededVars::new(opts.seed);
    if let Some(init) = init {
        seeded = seeded.with_initial(init);
    }
    let (varmap, vb) = seeded.into_var_builder(&device);
    let ops = EagerOps::new(vb);
    // 1. create the parameters with one forward pass (the model declares them as it runs)
    {
        let d = &config.denoiser;
        let mut dims = vec![1];
        dims.extend(d.sample_shape());
        let x = Tensor::zeros(dims, DType::F32, &device)?;
        let t = Tensor::zeros(1, DType::F32, &device)?;
        let y = d
            .num_classes()
            .map(|_| Tensor::zeros(1, DType::I64, &device))
            .transpose()?;
        d.forward(&ops, &x, &t, y.as_ref())?;
    }
    let model_params: std::collections::HashSet<String> =
        varmap.data().lock().unwrap().keys().cloned().collect();
    if let Some(declare) = &train_only {
        declare(&ops)?;
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
        if st.method != method {
            bail!(
                "--resume: {} was trained with {}, this run asks for {}",
                out.display(),
                st.method,
                method
            );
        }
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
        let model_ema: HashMap<String, Tensor> = ema
            .iter()
            .filter(|(k, _)| model_params.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        checkpoint::save_tensors(&out.join(checkpoint::WEIGHTS_FILE), &model_ema)?;
        checkpoint::write_atomic(
            &state_json,
            serde_json::to_string_pretty(&TrainState {
                step,
                options: opts.clone(),
                method: method.clone(),
            })?
            .as_bytes(),
        )?;
        checkpoint::save_config(out, &config)?;
        let csv: String = std::iter::once("step,loss\n".to_string())
            .chain(losses.iter().map(|(s, l)| format!("{s},{l}\n")))
            .collect();
        checkpoint::write_atomic(&out.join("loss.csv"), csv.as_bytes())?;
        Ok(())
    };
    // 3. the loop
    let loop_start = std::time::Instant::now();
    let mut iters_done = opts.iters.max(start);
    for step in start..opts.iters {
        let mut rng = step_rng(opts.seed, step);
        let l = loss(&ops, &mut rng, step)?;
        let lv = l.to_scalar::<f32>()?;
        if !lv.is_finite() {
            bail!("loss became {lv} at iteration {step}; lower --lr");
        }
        let grads = l.backward()?;
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
        let out_of_time = opts
            .time_budget_s
            .is_some_and(|b| loop_start.elapsed().as_secs_f64() >= b);
        if done.is_multiple_of(opts.checkpoint_every) || done == opts.iters || out_of_time {
            save(done, &adam, &ema, &losses)?;
        }
        if out_of_time && done < opts.iters {
            iters_done = done;
            break;
        }
    }
    if start >= opts.iters {
        save(start, &adam, &ema, &losses)?;
    }
    let loop_seconds = loop_start.elapsed().as_secs_f64();
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
        iters_run: iters_done.saturating_sub(start),
        iters_done,
        loop_seconds,
        device: crate::device::name(&device),
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
