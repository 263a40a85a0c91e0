//! The training loop every method shares (teacher DDPM training, Imagine Flash, KDM): AdamW and
//! EMA (`optimizer`), periodic atomic checkpoints, `--resume`, `--time-budget`, progress bar,
//! loss log (CSV) and curve (PNG), on the device of `LoopSpec.device`.
//!
//! Determinism: iteration `i` gets an RNG seeded by (seed, i), so a resumed run continues
//! exactly as an uninterrupted one would. The method supplies only its loss.

use crate::checkpoint::{self, ModelConfig};
use crate::optimizer::AdamW;
use crate::train::TrainOptions;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use flashctl_graphs::EagerOps;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// Wall time of each iteration this invocation ran (loss, backward, AdamW, EMA; not the
    /// checkpoints), in seconds: what `flashctl bench-train` reports.
    pub step_seconds: Vec<f64>,
    /// Resident memory of the process after each of those iterations, MiB (`bench-train`
    /// reports it after the warm-up); flat when nothing is retained from one iteration to the
    /// next.
    pub rss_mib: Vec<f64>,
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
/// A run that fails before its first checkpoint removes the directory it started (nothing half
/// written is left); after a checkpoint the directory stays, resumable.
pub fn train_loop<F>(spec: LoopSpec, loss: F) -> Result<TrainReport>
where
    F: FnMut(&EagerOps, &mut StdRng, usize) -> Result<Tensor>,
{
    let out = spec.out.to_path_buf();
    let started_empty = std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none());
    let result = run_loop(spec, loss);
    if result.is_err() && started_empty && !out.join("train_state.json").exists() {
        let _ = std::fs::remove_dir_all(&out);
    }
    result
}

fn run_loop<F>(spec: LoopSpec, mut loss: F) -> Result<TrainReport>
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
    check_options(&opts)?;
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
    let flat = crate::optimizer::flat_for(&device);
    let mut adam = AdamW::new(vars.clone(), opts.lr, opts.weight_decay, flat)?;
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
        let st: TrainState = serde_json::from_str(&crate::fsx::read_to_string(&state_json)?)
            .with_context(|| format!("reading {}", state_json.display()))?;
        if st.method != method {
            bail!(
                "--resume: {} was trained with {}, this run asks for {}",
                out.display(),
                st.method,
                method
            );
        }
        check_resume_matches(out, &st.options, &opts, &config)?;
        let saved = checkpoint::load_tensors(&state_path, &device)?;
        let get = |k: &str| {
            saved
                .get(k)
                .cloned()
                .with_context(|| format!("{}: tensor `{k}` missing", state_path.display()))
        };
        let (mut params, mut m, mut v, mut ema) = (vec![], vec![], vec![], vec![]);
        for (name, _) in &vars {
            params.push(get(&format!("param.{name}"))?);
            m.push(get(&format!("adam_m.{name}"))?);
            v.push(get(&format!("adam_v.{name}"))?);
            ema.push(get(&format!("ema.{name}"))?);
        }
        adam.restore(st.step, &params, m, v, ema)?;
        start = st.step;
        losses = read_loss_log(&out.join("loss.csv"))?
            .into_iter()
            .filter(|(s, _)| *s <= start)
            .collect();
    }
    let mut pb = crate::progress::Progress::new("iter", opts.iters, progress);
    pb.resume_at(start);
    let save = |step: usize, adam: &AdamW, losses: &[(usize, f32)]| -> Result<()> {
        let mut st = HashMap::new();
        let mut model_ema: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, var)) in vars.iter().enumerate() {
            let (m, v, ema) = adam.moments(i)?;
            st.insert(format!("param.{name}"), var.as_tensor().clone());
            st.insert(format!("adam_m.{name}"), m);
            st.insert(format!("adam_v.{name}"), v);
            st.insert(format!("ema.{name}"), ema.clone());
            if model_params.contains(name) {
                model_ema.insert(name.clone(), ema);
            }
        }
        checkpoint::save_tensors(&state_path, &st)?;
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
    let mut step_seconds = Vec::with_capacity(opts.iters.saturating_sub(start));
    let mut rss_mib = Vec::with_capacity(opts.iters.saturating_sub(start));
    for step in start..opts.iters {
        let step_start = std::time::Instant::now();
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
        adam.update_ema(decay)?;
        step_seconds.push(step_start.elapsed().as_secs_f64());
        rss_mib.push(crate::bench_train::current_rss_mib());
        losses.push((step + 1, lv));
        pb.inc(&format!("loss {lv:.4}"));
        let done = step + 1;
        let out_of_time = opts
            .time_budget_s
            .is_some_and(|b| loop_start.elapsed().as_secs_f64() >= b);
        if done.is_multiple_of(opts.checkpoint_every) || done == opts.iters || out_of_time {
            save(done, &adam, &losses)?;
        }
        if out_of_time && done < opts.iters {
            iters_done = done;
            break;
        }
    }
    if start >= opts.iters {
        save(start, &adam, &losses)?;
    }
    let loop_seconds = loop_start.elapsed().as_secs_f64();
    pb.finish();
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
        step_seconds,
        rss_mib,
    })
}

/// A resumed run must be the run it continues: the same model (architecture, dataset,
/// schedule, distillation: config.json) and the same training options, except the ones that do
/// not change the result (--checkpoint-every, --time-budget) and --iters, which may grow (the
/// learning rate is constant, so a longer run continues exactly).
fn check_resume_matches(
    out: &Path,
    saved: &TrainOptions,
    now: &TrainOptions,
    config: &ModelConfig,
) -> Result<()> {
    let mut differ: Vec<String> = vec![];
    let mut cmp = |name: &str, was: String, asked: String| {
        if was != asked {
            differ.push(format!("{name} {was} (this run: {asked})"));
        }
    };
    cmp("--batch", saved.batch.to_string(), now.batch.to_string());
    cmp("--lr", saved.lr.to_string(), now.lr.to_string());
    cmp("--seed", saved.seed.to_string(), now.seed.to_string());
    cmp(
        "weight decay",
        saved.weight_decay.to_string(),
        now.weight_decay.to_string(),
    );
    cmp(
        "EMA decay",
        saved.ema_decay.to_string(),
        now.ema_decay.to_string(),
    );
    let config_path = out.join(checkpoint::CONFIG_FILE);
    let saved_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("--resume: reading {}", config_path.display()))?,
    )
    .with_context(|| format!("--resume: {}", config_path.display()))?;
    let asked = serde_json::to_value(config)?;
    for key in ["dataset", "denoiser", "schedule", "distillation", "role"] {
        let (was, now) = (saved_config.get(key), asked.get(key));
        if was == now {
            continue;
        }
        let text =
            |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("?").to_string();
        differ.push(match key {
            "dataset" => format!("--dataset {} (this run: {})", text(was), text(now)),
            "denoiser" => "the architecture (another --preset?)".into(),
            other => format!("the {other}"),
        });
    }
    if !differ.is_empty() {
        bail!(crate::validation::BadInput(format!(
            "--resume: {} was trained with other options: {}; resume with the run's own options, \
             or start a new --out",
            out.display(),
            differ.join(", ")
        )));
    }
    Ok(())
}

/// Refuse options that would train nothing or train on nonsense, before anything is written.
fn check_options(o: &TrainOptions) -> Result<()> {
    if o.iters == 0 {
        bail!("--iters 0: nothing to train (give at least 1)");
    }
    if o.batch == 0 {
        bail!("--batch 0: a training step needs at least 1 sample");
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        bail!("--lr {}: the learning rate must be a positive number", o.lr);
    }
    if o.checkpoint_every == 0 {
        bail!("--checkpoint-every 0: give at least 1");
    }
    if o.time_budget_s
        .is_some_and(|b| !(b.is_finite() && b >= 0.0))
    {
        bail!("--time-budget must be a number of seconds >= 0 (0 stops after one iteration)");
    }
    Ok(())
}

fn read_loss_log(path: &Path) -> Result<Vec<(usize, f32)>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = crate::fsx::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (s, v) = l.split_once(',')?;
            Some((s.parse().ok()?, v.parse().ok()?))
        })
        .collect())
}
