//! Imagine Flash (Kohler et al. 2024) as flashctl defines it — see docs/methods.md for the
//! definitions, what the paper leaves open, and the measurements behind the defaults.
//!
//! - backward distillation: the student's input at step i comes from its own no-grad sampler
//!   run from x_T (`Inputs::Backward`), not from forward-noised data (`Inputs::Forward`);
//! - shifted reconstruction loss: the student's x0 is re-noised (fresh noise, stop-gradient) to
//!   s = tau(t_i) and the teacher's x0 prediction there is the target (`Loss::Srl`); baseline:
//!   the teacher's own M-step DDIM solution from the same state (`Loss::Trajectory`);
//! - noise correction: the first update uses the true x_T as its epsilon (and an epsilon model's
//!   first output is read as x0), exactly as the exported sampler does (`sampler::chain_plan`).

use crate::models::Denoiser;
use crate::sampler::{apply_step, chain_plan, prediction_coeffs, SamplerPlan};
use crate::schedule::{ScheduleConfig, Spacing};
use crate::train::per_sample;
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use flashctl_graphs::EagerOps;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inputs {
    Backward,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Srl,
    Trajectory,
    /// Trajectory-segmented target (Hyper-SD, PCM, multistep consistency): step i is matched to
    /// the teacher's ODE over its own segment t_i -> t_{i+1}, read back as the x0 that makes the
    /// student's step land where the teacher lands; the last step is the trajectory target.
    Segment,
}

/// The timestep shift s = tau(t) of the shifted reconstruction loss (T = last training step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tau {
    /// s = t
    Identity,
    /// s = T (t / T)^gamma: gamma > 1 shifts mid-range steps down, leaves t = T in place
    Power(f64),
    /// s = t - d (at least 0)
    Offset(usize),
    /// s = c t
    Scale(f64),
    /// s = S at every step (may lie above t: the student's x0 is re-noised upward)
    Const(usize),
}

impl std::str::FromStr for Tau {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        let num = |what: &str| -> Result<f64, String> {
            arg.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    format!("--tau {s}: {what} needs a non-negative number, as {kind}:X")
                })
        };
        match kind {
            "identity" if arg.is_empty() => Ok(Tau::Identity),
            "power" => Ok(Tau::Power(num("power")?)),
            "offset" => Ok(Tau::Offset(num("offset")? as usize)),
            "scale" if num("scale")? <= 1.0 => Ok(Tau::Scale(num("scale")?)),
            "scale" => Err(format!("--tau {s}: scale must be in [0, 1]")),
            "const" => Ok(Tau::Const(num("const")? as usize)),
            _ => Err(format!(
                "unknown --tau `{s}` (identity, power:G, offset:D, scale:C, const:S)"
            )),
        }
    }
}

impl std::fmt::Display for Tau {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tau::Identity => write!(f, "identity"),
            Tau::Power(g) => write!(f, "power:{g}"),
            Tau::Offset(d) => write!(f, "offset:{d}"),
            Tau::Scale(c) => write!(f, "scale:{c}"),
            Tau::Const(v) => write!(f, "const:{v}"),
        }
    }
}

impl Tau {
    pub fn apply(&self, t: usize, last: usize) -> usize {
        let s = match *self {
            Tau::Identity => t as f64,
            Tau::Power(g) => last as f64 * (t as f64 / last as f64).powf(g),
            Tau::Offset(d) => t.saturating_sub(d) as f64,
            Tau::Scale(c) => c * t as f64,
            Tau::Const(v) => v as f64,
        };
        (s.round() as usize).min(last)
    }
}

/// Which noise re-noises the student's x0 in the shifted reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SrlNoise {
    /// fresh N(0, I) noise each iteration
    Fresh,
    /// the noise implied by the student's input state and its x0,
    /// (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t): the target stays a function of x_T
    Implied,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImagineFlashOptions {
    pub steps: usize,
    pub inputs: Inputs,
    pub loss: LossKind,
    pub noise_correction: bool,
    pub tau: Tau,
    pub srl_noise: SrlNoise,
    /// DDIM steps of the teacher's solution: the trajectory target's, each segment's (scaled by
    /// the segment's share of the schedule), and SRL's solve from the shifted point (1: one
    /// teacher x0 prediction there).
    pub teacher_steps: usize,
    /// The discriminator term's weight (`--adversarial`): the student's final outputs against
    /// real samples of the data set, trained without cross-gradients (`distill::adversarial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<f64>,
}

/// The student's fixed timesteps: trailing spacing of the teacher's schedule (first step t = T).
pub fn student_timesteps(schedule: &ScheduleConfig, steps: usize) -> Result<Vec<usize>> {
    let trailing = ScheduleConfig {
        timestep_spacing: Spacing::Trailing,
        steps_offset: 0,
        ..schedule.clone()
    };
    trailing
        .timesteps(steps)
        .map_err(|e| anyhow!("--steps {steps}: {e}"))
}

pub fn student_plan(schedule: &ScheduleConfig, o: &ImagineFlashOptions) -> Result<SamplerPlan> {
    let ts = student_timesteps(schedule, o.steps)?;
    chain_plan(schedule, &ts, o.noise_correction).map_err(|e| anyhow!("student sampler: {e}"))
}

/// A frozen denoiser: (x, t [B], labels) -> model output, no gradient.
pub type TeacherFn<'a> = dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor> + 'a;
/// A frozen sampler: (plan, start state, labels) -> sample, no gradient.
pub type TeacherSampleFn<'a> =
    dyn Fn(&SamplerPlan, &Tensor, Option<&Tensor>) -> Result<Tensor> + 'a;

/// States of the student's own sampler from `x_t_noise`, without gradient: `states[j]` is the
/// input of step j (states[0] = x_T). Runs `upto` steps.
pub fn backward_states(
    ops: &EagerOps,
    student: &Denoiser,
    plan: &SamplerPlan,
    x_t_noise: &Tensor,
    labels: Option<&Tensor>,
    upto: usize,
) -> Result<Vec<Tensor>> {
    let mut states = vec![x_t_noise.clone()];
    let mut x = x_t_noise.clone();
    for (j, s) in plan.steps.iter().take(upto).enumerate() {
        let t = Tensor::new(&[s.t as f32], x.device())?;
        let out = student.forward(ops, &x, &t, labels)?.detach();
        let nc = (plan.noise_correction && j == 0).then_some(x_t_noise);
        let (_, next) = apply_step(ops, s, &x, &out, nc)?;
        x = next.detach();
        states.push(x.clone());
    }
    Ok(states)
}

/// Row b of `states[idx[b]]` for every b.
pub fn gather_rows(states: &[Tensor], idx: &[usize]) -> Result<Tensor> {
    let rows = idx
        .iter()
        .enumerate()
        .map(|(b, &i)| states[i].narrow(0, b, 1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// The student's x0 at per-sample step `idx[b]` of `plan`, with gradient.
pub fn student_x0(
    ops: &EagerOps,
    student: &Denoiser,
    plan: &SamplerPlan,
    x: &Tensor,
    idx: &[usize],
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let rank = x.rank() - 1;
    let t: Vec<f32> = idx.iter().map(|&i| plan.steps[i].t as f32).collect();
    let t = Tensor::from_vec(t, idx.len(), x.device())?;
    let out = student.forward(ops, x, &t, labels)?;
    let cx: Vec<f32> = idx.iter().map(|&i| plan.steps[i].x0_x).collect();
    let co: Vec<f32> = idx.iter().map(|&i| plan.steps[i].x0_out).collect();
    Ok((x.broadcast_mul(&per_sample(&cx, rank, x.device())?)?
        + out.broadcast_mul(&per_sample(&co, rank, out.device())?)?)?)
}

/// The teacher's x0 prediction at per-sample timesteps `s` (clamped as its sampler clamps).
pub fn teacher_x0(
    teacher: &TeacherFn,
    schedule: &ScheduleConfig,
    x: &Tensor,
    s: &[usize],
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let ac = schedule.alphas_cumprod();
    let rank = x.rank() - 1;
    let mut cx = vec![];
    let mut co = vec![];
    for &si in s {
        let (a, b, _, _) =
            prediction_coeffs(schedule.prediction_type, ac[si], si).map_err(|e| {
                anyhow!("shifted target at s={si}: {e} (choose a --tau that shifts below it)")
            })?;
        cx.push(a);
        co.push(b);
    }
    let t = Tensor::from_vec(s.iter().map(|&v| v as f32).collect(), s.len(), x.device())?;
    let out = teacher(x, &t, labels)?;
    let x0 = (x.broadcast_mul(&per_sample(&cx, rank, x.device())?)?
        + out.broadcast_mul(&per_sample(&co, rank, out.device())?)?)?;
    Ok(if schedule.clip_sample {
        let r = schedule.clip_sample_range as f64;
        x0.clamp(-r, r)?
    } else {
        x0
    })
}

/// The (stop-gradient) student x0 re-noised to per-sample timesteps s with `eps`.
pub fn renoise(
    schedule: &ScheduleConfig,
    student_x0: &Tensor,
    s: &[usize],
    eps: &Tensor,
) -> Result<Tensor> {
    let ac = schedule.alphas_cumprod();
    let rank = student_x0.rank() - 1;
    let sa: Vec<f32> = s.iter().map(|&v| ac[v].sqrt()).collect();
    let sb: Vec<f32> = s.iter().map(|&v| (1.0 - ac[v]).sqrt()).collect();
    let x0 = student_x0.detach();
    Ok((x0.broadcast_mul(&per_sample(&sa, rank, x0.device())?)?
        + eps.broadcast_mul(&per_sample(&sb, rank, eps.device())?)?)?)
}

/// Shifted reconstruction target with one teacher call: re-noise the (stop-gradient) student
/// x0 to s with `eps`, and take the teacher's x0 prediction there.
pub fn srl_target(
    teacher: &TeacherFn,
    schedule: &ScheduleConfig,
    student_x0: &Tensor,
    s: &[usize],
    eps: &Tensor,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let xs = renoise(schedule, student_x0, s, eps)?;
    teacher_x0(teacher, schedule, &xs, s, labels)
}

/// (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) per sample, without gradient.
pub fn implied_noise(
    schedule: &ScheduleConfig,
    plan: &SamplerPlan,
    x_t: &Tensor,
    x0: &Tensor,
    idx: &[usize],
) -> Result<Tensor> {
    let ac = schedule.alphas_cumprod();
    let rank = x_t.rank() - 1;
    let sa: Vec<f32> = idx.iter().map(|&i| ac[plan.steps[i].t].sqrt()).collect();
    let inv_sb: Vec<f32> = idx
        .iter()
        .map(|&i| 1.0 / (1.0 - ac[plan.steps[i].t]).sqrt().max(1e-6))
        .collect();
    let num = (x_t
        - x0.detach()
            .broadcast_mul(&per_sample(&sa, rank, x0.device())?)?)?;
    Ok(num.broadcast_mul(&per_sample(&inv_sb, rank, num.device())?)?)
}

/// DDIM timesteps of the teacher's solution from t down: M evenly spaced, strictly decreasing.
pub fn trajectory_timesteps(t: usize, m: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..m.max(1))
        .map(|j| ((t as f64) * (m - j) as f64 / m as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// `f(key, rows of x, their labels)` once per distinct key of `keys` (one teacher run per
/// timestep or step index, not per sample), reassembled in the original row order.
fn per_group(
    keys: &[usize],
    x: &Tensor,
    labels: Option<&Tensor>,
    mut f: impl FnMut(usize, &Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut out: Vec<Option<Tensor>> = vec![None; keys.len()];
    let mut distinct: Vec<usize> = keys.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for key in distinct {
        let rows: Vec<usize> = (0..keys.len()).filter(|&b| keys[b] == key).collect();
        let ix = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            x.device(),
        )?;
        let xr = x.index_select(&ix, 0)?;
        let lr = labels.map(|l| l.index_select(&ix, 0)).transpose()?;
        let y = f(key, &xr, lr.as_ref())?;
        for (k, &r) in rows.iter().enumerate() {
            out[r] = Some(y.narrow(0, k, 1)?);
        }
    }
    let rows: Vec<Tensor> = out
        .into_iter()
        .map(|r| r.expect("every row filled"))
        .collect();
    Ok(Tensor::cat(&rows, 0)?)
}

/// The teacher's M-step DDIM (eta 0) plan from t to x0.
pub fn trajectory_plan(schedule: &ScheduleConfig, t: usize, m: usize) -> Result<SamplerPlan> {
    chain_plan(schedule, &trajectory_timesteps(t, m), false)
        .map_err(|e| anyhow!("teacher trajectory from t={t}: {e}"))
}

/// Trajectory target: the teacher's M-step DDIM (eta 0) solution from each sample's state.
pub fn trajectory_target(
    teacher_sample: &TeacherSampleFn,
    schedule: &ScheduleConfig,
    x: &Tensor,
    t_of: &[usize],
    m: usize,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    per_group(t_of, x, labels, |t, xr, lr| {
        teacher_sample(&trajectory_plan(schedule, t, m)?, xr, lr)
    })
}

/// The teacher's DDIM timesteps over one segment t -> t_next: `m` evenly spaced values from t
/// (strictly decreasing, above t_next), then t_next itself, where the run stops.
pub fn segment_timesteps(t: usize, t_next: usize, m: usize) -> Vec<usize> {
    let span = (t - t_next) as f64;
    let m = m.max(1);
    let mut v: Vec<usize> = (0..m)
        .map(|j| t_next + (span * (m - j) as f64 / m as f64).round() as usize)
        .collect();
    v.push(t_next);
    v.dedup();
    v
}

/// Teacher DDIM steps for a run over `span` timesteps: `m` scaled by the share of the schedule
/// it covers, at least 1.
pub fn scaled_steps(m: usize, span: usize, schedule: &ScheduleConfig) -> usize {
    let last = schedule.num_train_timesteps - 1;
    (m * span).div_ceil(last.max(1)).max(1)
}

/// The teacher's DDIM plan over one segment t -> t_next (~`m` steps over the whole schedule),
/// stopping at t_next: the plan's last step, which would go on to x0, is dropped.
pub fn segment_plan(
    schedule: &ScheduleConfig,
    t: usize,
    t_next: usize,
    m: usize,
) -> Result<SamplerPlan> {
    let ts = segment_timesteps(t, t_next, scaled_steps(m, t - t_next, schedule));
    let mut seg = chain_plan(schedule, &ts, false)
        .map_err(|e| anyhow!("teacher segment {t} -> {t_next}: {e}"))?;
    seg.steps.pop();
    seg.timesteps.pop();
    Ok(seg)
}

/// (P, Q) with next = P x + Q x0 for step `i` of the student's plan: the x0 a step must predict
/// to move x to a given next state is (next - P x) / Q. At a noise-corrected first step the
/// epsilon is the state itself (x = x_T); otherwise it is implied by x and x0.
pub fn step_inverse(plan: &SamplerPlan, i: usize) -> Result<(f32, f32)> {
    let s = &plan.steps[i];
    let (p, q) = if plan.noise_correction && i == 0 {
        (s.next_x + s.next_eps, s.next_x0)
    } else {
        if s.x0_out == 0.0 {
            bail!(
                "step {i} (t={}): x0 does not depend on the model output",
                s.t
            );
        }
        let r = s.eps_out / s.x0_out;
        (
            s.next_x + s.next_eps * (s.eps_x - r * s.x0_x),
            s.next_x0 + s.next_eps * r,
        )
    };
    if q.abs() < 1e-8 {
        bail!("step {i} (t={}): the next state does not depend on x0", s.t);
    }
    Ok((p, q))
}

/// The x0 that moves `x` to `next` at step `i` of `plan` ([`step_inverse`]).
pub fn x0_for_step(plan: &SamplerPlan, i: usize, x: &Tensor, next: &Tensor) -> Result<Tensor> {
    let (p, q) = step_inverse(plan, i)?;
    Ok(((next - (x * p as f64)?)? * (1.0 / q as f64))?)
}

/// Segment target: for a sample at step i (state x, timestep t_i), the teacher's ODE over
/// t_i -> t_{i+1} ([`segment_plan`]), read back as the x0 the student's step needs to land on
/// it; at the last step, the teacher's M-step solution.
pub fn segment_target(
    teacher_sample: &TeacherSampleFn,
    schedule: &ScheduleConfig,
    plan: &SamplerPlan,
    x: &Tensor,
    idx: &[usize],
    m: usize,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let k = plan.steps.len();
    per_group(idx, x, labels, |i, xr, lr| {
        let t = plan.steps[i].t;
        if i + 1 == k {
            return teacher_sample(&trajectory_plan(schedule, t, m)?, xr, lr);
        }
        let seg = segment_plan(schedule, t, plan.steps[i + 1].t, m)?;
        x0_for_step(plan, i, xr, &teacher_sample(&seg, xr, lr)?)
    })
}

pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

/// Everything one iteration draws at random, so a test can fix it.
pub struct IterDraw {
    pub noise: Tensor,
    pub labels: Option<Tensor>,
    /// step index per sample
    pub idx: Vec<usize>,
    /// data for forward inputs
    pub x0_data: Option<Tensor>,
    pub forward_eps: Option<Tensor>,
    /// fresh noise of the shifted reconstruction
    pub srl_eps: Tensor,
    /// real samples for the discriminator (`--adversarial`)
    pub real: Option<Tensor>,
}

/// One Imagine Flash loss evaluation: student inputs (backward or forward), student x0 with
/// gradient, target (SRL or trajectory), MSE.
#[allow(clippy::too_many_arguments)]
pub fn loss(
    ops: &EagerOps,
    student: &Denoiser,
    plan: &SamplerPlan,
    schedule: &ScheduleConfig,
    o: &ImagineFlashOptions,
    draw: &IterDraw,
    teacher: &TeacherFn,
    teacher_sample: &TeacherSampleFn,
) -> Result<Tensor> {
    let labels = draw.labels.as_ref();
    let rank = draw.noise.rank() - 1;
    let x_in = match o.inputs {
        Inputs::Backward => {
            let upto = draw.idx.iter().copied().max().unwrap_or(0);
            let states = backward_states(ops, student, plan, &draw.noise, labels, upto)?;
            gather_rows(&states, &draw.idx)?
        }
        Inputs::Forward => {
            let (Some(x0), Some(eps)) = (&draw.x0_data, &draw.forward_eps) else {
                bail!("forward inputs need training data");
            };
            let ac = schedule.alphas_cumprod();
            let sa: Vec<f32> = draw
                .idx
                .iter()
                .map(|&i| ac[plan.steps[i].t].sqrt())
                .collect();
            let sb: Vec<f32> = draw
                .idx
                .iter()
                .map(|&i| (1.0 - ac[plan.steps[i].t]).sqrt())
                .collect();
            (x0.broadcast_mul(&per_sample(&sa, rank, x0.device())?)?
                + eps.broadcast_mul(&per_sample(&sb, rank, eps.device())?)?)?
        }
    };
    let x0_s = student_x0(ops, student, plan, &x_in, &draw.idx, labels)?;
    let last = schedule.num_train_timesteps - 1;
    let target = match o.loss {
        LossKind::Srl => {
            let s: Vec<usize> = draw
                .idx
                .iter()
                .map(|&i| o.tau.apply(plan.steps[i].t, last))
                .collect();
            let eps = match o.srl_noise {
                SrlNoise::Fresh => draw.srl_eps.clone(),
                SrlNoise::Implied => implied_noise(schedule, plan, &x_in, &x0_s, &draw.idx)?,
            };
            if o.teacher_steps <= 1 {
                srl_target(teacher, schedule, &x0_s, &s, &eps, labels)?
            } else {
                // as published: the teacher solves k steps from the re-noised point
                let xs = renoise(schedule, &x0_s, &s, &eps)?;
                trajectory_target(teacher_sample, schedule, &xs, &s, o.teacher_steps, labels)?
            }
        }
        LossKind::Trajectory => {
            let t_of: Vec<usize> = draw.idx.iter().map(|&i| plan.steps[i].t).collect();
            trajectory_target(
                teacher_sample,
                schedule,
                &x_in.detach(),
                &t_of,
                o.teacher_steps,
                labels,
            )?
        }
        LossKind::Segment => segment_target(
            teacher_sample,
            schedule,
            plan,
            &x_in.detach(),
            &draw.idx,
            o.teacher_steps,
            labels,
        )?,
    };
    let distill = mse(&x0_s, &target.detach())?;
    match (o.adversarial, &draw.real) {
        (Some(w), Some(real)) => {
            // the discriminator judges what the student outputs: its x0 at the last step
            let last: Vec<u32> = (0..draw.idx.len())
                .filter(|&b| draw.idx[b] + 1 == plan.steps.len())
                .map(|b| b as u32)
                .collect();
            let fake = if last.is_empty() {
                x0_s.clone()
            } else {
                let ix = Tensor::from_vec(last.clone(), last.len(), x0_s.device())?;
                x0_s.index_select(&ix, 0)?
            };
            let n = fake.dims()[0].min(real.dims()[0]);
            let adv =
                super::adversarial::terms(ops, &fake.narrow(0, 0, n)?, &real.narrow(0, 0, n)?, w)?;
            Ok((distill + adv)?)
        }
        (Some(_), None) => bail!("--adversarial needs real samples (a data set)"),
        _ => Ok(distill),
    }
}

/// Check the options make sense for this teacher before training starts.
pub fn check_options(o: &ImagineFlashOptions, schedule: &ScheduleConfig) -> Result<()> {
    if !(1..=8).contains(&o.steps) {
        bail!(
            "--steps {}: Imagine Flash students take 1 to 8 steps",
            o.steps
        );
    }
    if matches!(o.loss, LossKind::Trajectory | LossKind::Segment) && o.teacher_steps == 0 {
        bail!("--teacher-steps must be at least 1");
    }
    let plan = student_plan(schedule, o)?;
    // the SRL target must be computable at every shifted step
    if o.loss == LossKind::Srl {
        let ac = schedule.alphas_cumprod();
        let last = schedule.num_train_timesteps - 1;
        for s in &plan.steps {
            let si = o.tau.apply(s.t, last);
            prediction_coeffs(schedule.prediction_type, ac[si], si).map_err(|e| {
                anyhow!(
                    "--tau {}: the teacher cannot predict x0 at s={si}: {e}",
                    o.tau
                )
            })?;
        }
    }
    Ok(())
}

/// Uniform labels in 0..k.
pub fn random_labels(
    rng: &mut impl rand::Rng,
    b: usize,
    k: usize,
    device: &Device,
) -> Result<Tensor> {
    let v: Vec<i64> = (0..b).map(|_| rng.gen_range(0..k as i64)).collect();
    Ok(Tensor::from_vec(v, b, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Prediction;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }
    fn v(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    fn sched(p: Prediction) -> ScheduleConfig {
        ScheduleConfig {
            prediction_type: p,
            ..Default::default()
        }
    }

    #[test]
    fn tau_parses_and_shifts() {
        assert_eq!("scale:0.25".parse::<Tau>().unwrap().apply(999, 999), 250);
        assert_eq!("offset:300".parse::<Tau>().unwrap().apply(200, 999), 0);
        assert_eq!("power:2".parse::<Tau>().unwrap().apply(999, 999), 999);
        assert_eq!("power:2".parse::<Tau>().unwrap().apply(500, 999), 250);
        assert_eq!("identity".parse::<Tau>().unwrap().apply(417, 999), 417);
        assert!("scale:2".parse::<Tau>().is_err());
        assert!("warp:1".parse::<Tau>().is_err());
    }

    #[test]
    fn srl_target_renoises_the_student_x0_and_asks_the_teacher() {
        // an x0-predicting teacher that returns its input: the target is the re-noised point
        let s = sched(Prediction::X0);
        let ac = s.alphas_cumprod();
        let teacher = |x: &Tensor, _t: &Tensor, _l: Option<&Tensor>| Ok(x.clone());
        let x0 = t(&[1.0, -2.0, 0.5, 0.0], &[2, 2]);
        let eps = t(&[0.1, 0.2, -0.3, 0.4], &[2, 2]);
        let steps = [100, 700];
        let got = srl_target(&teacher, &s, &x0, &steps, &eps, None).unwrap();
        let (a0, b0) = (ac[100].sqrt(), (1.0 - ac[100]).sqrt());
        let (a1, b1) = (ac[700].sqrt(), (1.0 - ac[700]).sqrt());
        let want = [
            a0 * 1.0 + b0 * 0.1,
            a0 * -2.0 + b0 * 0.2,
            a1 * 0.5 + b1 * -0.3,
            a1 * 0.0 + b1 * 0.4,
        ];
        close(&v(&got), &want);
    }

    #[test]
    fn teacher_x0_uses_the_teachers_parameterisation_and_clip() {
        // v-prediction teacher answering v = 0: x0 = sqrt(abar) x, clamped to [-1, 1]
        let mut s = sched(Prediction::V);
        s.clip_sample = true;
        let ac = s.alphas_cumprod();
        let zero = |x: &Tensor, _t: &Tensor, _l: Option<&Tensor>| Ok(x.zeros_like()?);
        let x = t(&[0.5, 3.0], &[2, 1]);
        let got = teacher_x0(&zero, &s, &x, &[10, 10], None).unwrap();
        close(&v(&got), &[0.5 * ac[10].sqrt(), 1.0]);
    }

    #[test]
    fn implied_noise_recovers_the_noise_of_a_forward_noised_state() {
        let s = sched(Prediction::V);
        let plan = chain_plan(&s, &[999, 500], false).unwrap();
        let ac = s.alphas_cumprod();
        let x0 = t(&[0.3, -0.7], &[2, 1]);
        let eps = t(&[1.5, -0.2], &[2, 1]);
        let idx = [1, 0];
        let sa = [ac[500].sqrt(), ac[999].sqrt()];
        let sb = [(1.0 - ac[500]).sqrt(), (1.0 - ac[999]).sqrt()];
        let xt = t(
            &[sa[0] * 0.3 + sb[0] * 1.5, sa[1] * -0.7 + sb[1] * -0.2],
            &[2, 1],
        );
        let got = implied_noise(&s, &plan, &xt, &x0, &idx).unwrap();
        close(&v(&got), &v(&eps));
    }

    #[test]
    fn trajectory_target_runs_the_teacher_from_each_samples_own_timestep() {
        // a fake teacher sampler returning its input times its first timestep
        let s = sched(Prediction::V);
        let fake =
            |p: &SamplerPlan, x: &Tensor, _l: Option<&Tensor>| Ok((x * p.timesteps[0] as f64)?);
        let x = t(&[1.0, 2.0, 3.0], &[3, 1]);
        let got = trajectory_target(&fake, &s, &x, &[500, 999, 500], 4, None).unwrap();
        close(&v(&got), &[500.0, 1998.0, 1500.0]);
        assert_eq!(trajectory_timesteps(999, 4), vec![999, 749, 500, 250]);
        assert_eq!(trajectory_timesteps(2, 4), vec![2, 1]);
    }

    #[test]
    fn segment_timesteps_run_from_t_to_the_next_students_timestep() {
        assert_eq!(segment_timesteps(999, 666, 3), vec![999, 888, 777, 666]);
        assert_eq!(segment_timesteps(5, 4, 8), vec![5, 4]);
    }

    #[test]
    fn step_inverse_recovers_the_x0_that_produced_a_step() {
        // for every parameterisation, with and without noise correction at the first step:
        // next = P x + Q x0 exactly as apply_step computes it
        use crate::models::{Denoiser, MlpConfig};
        let d = Denoiser::Mlp(MlpConfig {
            data_dim: 2,
            hidden: 8,
            layers: 1,
            time_dim: 4,
            num_classes: None,
        });
        let (_, vb) = crate::seeded_vars::SeededVars::new(1).into_var_builder(&Device::Cpu);
        let ops = EagerOps::new(vb);
        for p in [Prediction::V, Prediction::Epsilon, Prediction::X0] {
            for nc in [false, true] {
                let plan = chain_plan(&sched(p), &[999, 600, 250], nc).unwrap();
                let x = t(&[0.3, -1.2, 0.8, 0.1], &[2, 2]);
                for i in 0..2 {
                    let tt = Tensor::new(&[plan.steps[i].t as f32], &Device::Cpu).unwrap();
                    let out = d.forward(&ops, &x, &tt, None).unwrap();
                    let nc_eps = (nc && i == 0).then_some(&x);
                    let (x0, next) = apply_step(&ops, &plan.steps[i], &x, &out, nc_eps).unwrap();
                    let (pp, q) = step_inverse(&plan, i).unwrap();
                    let back =
                        ((&next - (&x * pp as f64).unwrap()).unwrap() * (1.0 / q as f64)).unwrap();
                    for (a, b) in v(&back).iter().zip(v(&x0)) {
                        assert!(
                            (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                            "{p:?} nc {nc} step {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn segment_target_asks_the_teacher_for_its_own_segment_and_the_last_step_for_x0() {
        // a fake teacher sampler: the first timestep it starts from plus 1000 x the last one it
        // visits, so the target shows which segment it was asked for
        let s = sched(Prediction::V);
        let plan = chain_plan(&s, &[999, 500], true).unwrap();
        let fake = |p: &SamplerPlan, x: &Tensor, _l: Option<&Tensor>| {
            let first = p.timesteps[0] as f64;
            let last = *p.timesteps.last().unwrap() as f64;
            Ok(((x * 0.0)? + (first + 1000.0 * last))?)
        };
        let x = t(&[1.0, 2.0], &[2, 1]);
        let got = v(&segment_target(&fake, &s, &plan, &x, &[0, 1], 4, None).unwrap());
        // step 0 (999 -> 500): the teacher runs 999 .. down to the step before 500 (the plan's
        // last step, which would go to x0, is dropped); the target is (next - P x) / Q
        let visited = segment_timesteps(999, 500, 2);
        let seg_last = visited[visited.len() - 2] as f32;
        let (p, q) = step_inverse(&plan, 0).unwrap();
        let want0 = (999.0 + 1000.0 * seg_last - p * 1.0) / q;
        assert!(
            (got[0] - want0).abs() < 1e-2 * want0.abs(),
            "{got:?} vs {want0}"
        );
        // the last step: the teacher's trajectory from 500 to x0
        let traj = trajectory_timesteps(500, 4);
        let want1 = 500.0 + 1000.0 * *traj.last().unwrap() as f32;
        assert!((got[1] - want1).abs() < 1e-3, "{got:?} vs {want1}");
    }

    #[test]
    fn mse_of_known_tensors() {
        let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = t(&[1.0, 0.0, 3.0, 2.0], &[2, 2]);
        assert_eq!(mse(&a, &b).unwrap().to_scalar::<f32>().unwrap(), 2.0);
    }

    #[test]
    fn backward_inputs_are_the_students_own_no_grad_sampler_states() {
        use crate::models::{Denoiser, MlpConfig};
        let d = Denoiser::Mlp(MlpConfig {
            data_dim: 2,
            hidden: 16,
            layers: 2,
            time_dim: 8,
            num_classes: None,
        });
        let (_, vb) = crate::seeded_vars::SeededVars::new(3).into_var_builder(&Device::Cpu);
        let ops = EagerOps::new(vb);
        let s = sched(Prediction::V);
        let plan = chain_plan(&s, &[999, 666, 332], true).unwrap();
        let noise = t(&[0.3, -1.0, 2.0, 0.1, -0.5, 0.9], &[3, 2]);
        let states = backward_states(&ops, &d, &plan, &noise, None, 2).unwrap();
        assert_eq!(states.len(), 3);
        for (j, st) in states.iter().enumerate() {
            // the state before step j is what the sampler produces after j steps
            let truncated = SamplerPlan {
                steps: plan.steps[..j].to_vec(),
                timesteps: plan.timesteps[..j].to_vec(),
                ..plan.clone()
            };
            let want = crate::sampler::sample(&ops, &d, &truncated, &noise, None).unwrap();
            close(&v(st), &v(&want));
            assert!(!st.track_op(), "state {j} must carry no gradient");
        }
        let picked = gather_rows(&states, &[2, 0, 1]).unwrap();
        let rows = v(&picked);
        close(&rows[0..2], &v(&states[2])[0..2]);
        close(&rows[2..4], &v(&states[0])[2..4]);
        close(&rows[4..6], &v(&states[1])[4..6]);
    }
}
