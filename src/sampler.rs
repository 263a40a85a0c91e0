//! Samplers as pure step plans plus one generic `sample` written against [`Ops`].
//!
//! A plan turns a schedule and a step count into per-step scalar coefficients; `sample` applies
//! them with the model. `flashctl sample` runs `sample` on the eager backend, `flashctl export`
//! runs the very same function on the trace backend, so the unrolled graph is the sampler.

use crate::models::Denoiser;
use crate::schedule::{Prediction, ScheduleConfig, Spacing};
use flashctl_graphs::{Ops, Result as GResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Euler,
    /// One call of a one-step generator (KDM): the output is the sample.
    OneStep,
}

/// The name a user types (`--sampler ddim`).
impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::OneStep => "one-step",
        })
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            o => Err(format!("unknown sampler `{o}` (ddim, euler)")),
        }
    }
}

/// One step: model input `x * in_scale` at timestep `t`; the model output `out` gives
/// `x0 = x0_x*x + x0_out*out` (clamped when `clip` is set) and `eps = eps_x*x + eps_out*out`;
/// the next state is `next_x*x + next_x0*x0 + next_eps*eps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPlan {
    pub t: usize,
    pub in_scale: f32,
    pub x0_x: f32,
    pub x0_out: f32,
    pub eps_x: f32,
    pub eps_out: f32,
    pub clip: Option<f32>,
    pub next_x: f32,
    pub next_x0: f32,
    pub next_eps: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerPlan {
    pub kind: SamplerKind,
    pub timesteps: Vec<usize>,
    /// The starting state is `noise * init_sigma`.
    pub init_sigma: f32,
    pub steps: Vec<StepPlan>,
    /// Noise correction (Imagine Flash): the first update uses the input noise as its epsilon.
    #[serde(default)]
    pub noise_correction: bool,
}

/// (x0_x, x0_out, eps_x, eps_out) for the parameterisation at alpha_bar `a` (float32 as torch).
pub fn prediction_coeffs(p: Prediction, a: f32, t: usize) -> Result<(f32, f32, f32, f32), String> {
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    match p {
        Prediction::Epsilon if sa == 0.0 => Err(format!(
            "epsilon prediction is singular at t={t} (alpha_bar = 0, zero terminal SNR): x0 cannot be recovered; use v or x0 prediction"
        )),
        Prediction::Epsilon => Ok((1.0 / sa, -sb / sa, 0.0, 1.0)),
        Prediction::V => Ok((sa, -sb, sb, sa)),
        Prediction::X0 if sb == 0.0 => Err(format!("x0 prediction is singular at t={t} (alpha_bar = 1)")),
        Prediction::X0 => Ok((0.0, 1.0, 1.0 / sb, -sa / sb)),
    }
}

/// One DDIM (eta 0) step at `t` landing on alpha_bar `a_prev`, with the model-output
/// coefficients (x0_x, x0_out, eps_x, eps_out) of the parameterisation.
fn ddim_step(
    cfg: &ScheduleConfig,
    t: usize,
    coeffs: (f32, f32, f32, f32),
    a_prev: f32,
) -> StepPlan {
    let (x0_x, x0_out, eps_x, eps_out) = coeffs;
    StepPlan {
        t,
        in_scale: 1.0,
        x0_x,
        x0_out,
        eps_x,
        eps_out,
        clip: cfg.clip_sample.then_some(cfg.clip_sample_range),
        next_x: 0.0,
        next_x0: a_prev.sqrt(),
        next_eps: (1.0 - a_prev).sqrt(),
    }
}

/// DDIM with eta = 0, as diffusers `DDIMScheduler.step`.
pub fn ddim_plan(cfg: &ScheduleConfig, steps: usize) -> Result<SamplerPlan, String> {
    let ac = cfg.alphas_cumprod();
    let timesteps = cfg.timesteps(steps)?;
    let ratio = (cfg.num_train_timesteps / steps) as i64;
    let final_alpha = if cfg.set_alpha_to_one { 1.0 } else { ac[0] };
    let mut plan = vec![];
    for &t in &timesteps {
        let prev = t as i64 - ratio;
        let a = ac[t];
        let a_prev = if prev >= 0 {
            ac[prev as usize]
        } else {
            final_alpha
        };
        let coeffs = prediction_coeffs(cfg.prediction_type, a, t)?;
        plan.push(ddim_step(cfg, t, coeffs, a_prev));
    }
    Ok(SamplerPlan {
        kind: SamplerKind::Ddim,
        timesteps,
        init_sigma: 1.0,
        steps: plan,
        noise_correction: false,
    })
}

/// Euler (first-order, sigma space) as diffusers `EulerDiscreteScheduler`, at the integer
/// timesteps of the configured spacing (diffusers interpolates sigmas at float timesteps for
/// "linspace"; flashctl keeps integer timesteps so every sampler shares one timestep rule).
pub fn euler_plan(cfg: &ScheduleConfig, steps: usize) -> Result<SamplerPlan, String> {
    let ac = cfg.alphas_cumprod();
    let timesteps = cfg.timesteps(steps)?;
    let sigma = |t: usize| ((1.0 - ac[t]) / ac[t]).sqrt();
    if timesteps.iter().any(|&t| !sigma(t).is_finite()) {
        return Err(
            "Euler needs finite sigmas; this schedule has zero terminal SNR (use ddim)".into(),
        );
    }
    let mut plan = vec![];
    for (i, &t) in timesteps.iter().enumerate() {
        let s = sigma(t);
        let s_next = timesteps.get(i + 1).map(|&n| sigma(n)).unwrap_or(0.0);
        let c = 1.0 / (s * s + 1.0).sqrt();
        // x is in sigma space (x = x0 + s*eps); the model sees x*c.
        let (x0_x, x0_out) = match cfg.prediction_type {
            Prediction::Epsilon => (1.0, -s),
            Prediction::V => (1.0 / (s * s + 1.0), -s * c),
            Prediction::X0 => (0.0, 1.0),
        };
        plan.push(StepPlan {
            t,
            in_scale: c,
            x0_x,
            x0_out,
            eps_x: 0.0,
            eps_out: 0.0,
            clip: None,
            next_x: s_next / s,
            next_x0: 1.0 - s_next / s,
            next_eps: 0.0,
        });
    }
    let max_sigma = sigma(timesteps[0]).max(sigma(cfg.num_train_timesteps - 1));
    let init_sigma = match cfg.timestep_spacing {
        Spacing::Linspace | Spacing::Trailing => (max_sigma * max_sigma + 1.0).sqrt(),
        Spacing::Leading => max_sigma,
    };
    Ok(SamplerPlan {
        kind: SamplerKind::Euler,
        timesteps,
        init_sigma,
        steps: plan,
        noise_correction: false,
    })
}

/// DDIM (eta 0) through an explicit timestep list, each step landing exactly on the next listed
/// timestep and the last on x0 — the fixed schedule of a distilled student. With noise
/// correction, the first step takes x0 from a well-conditioned output (v or x0 as predicted;
/// an epsilon model's output is read as x0 there) and uses the input noise as its epsilon.
pub fn chain_plan(
    cfg: &ScheduleConfig,
    timesteps: &[usize],
    noise_correction: bool,
) -> Result<SamplerPlan, String> {
    if timesteps.is_empty() {
        return Err("empty timestep list".into());
    }
    if timesteps.windows(2).any(|w| w[1] >= w[0]) {
        return Err(format!("timesteps {timesteps:?} must strictly decrease"));
    }
    if timesteps[0] >= cfg.num_train_timesteps {
        return Err(format!(
            "timestep {} outside 0..{}",
            timesteps[0], cfg.num_train_timesteps
        ));
    }
    let ac = cfg.alphas_cumprod();
    let mut plan = vec![];
    for (i, &t) in timesteps.iter().enumerate() {
        let a = ac[t];
        let a_prev = timesteps.get(i + 1).map(|&n| ac[n]).unwrap_or(1.0);
        let first_nc = noise_correction && i == 0;
        let coeffs = match cfg.prediction_type {
            Prediction::Epsilon if first_nc => (0.0, 1.0, 0.0, 0.0),
            p => prediction_coeffs(p, a, t)?,
        };
        plan.push(ddim_step(cfg, t, coeffs, a_prev));
    }
    Ok(SamplerPlan {
        kind: SamplerKind::Ddim,
        timesteps: timesteps.to_vec(),
        init_sigma: 1.0,
        steps: plan,
        noise_correction,
    })
}

/// One call of a one-step generator from x_T (the teacher's start, `init_sigma` 1 as DDIM):
/// x0 = output, clipped like the teacher's x0 when its schedule clips.
pub fn one_step_plan(cfg: &ScheduleConfig) -> SamplerPlan {
    let t = cfg.num_train_timesteps - 1;
    SamplerPlan {
        kind: SamplerKind::OneStep,
        timesteps: vec![t],
        init_sigma: 1.0,
        steps: vec![StepPlan {
            t,
            in_scale: 1.0,
            x0_x: 0.0,
            x0_out: 1.0,
            eps_x: 0.0,
            eps_out: 0.0,
            clip: cfg.clip_sample.then_some(cfg.clip_sample_range),
            next_x: 0.0,
            next_x0: 1.0,
            next_eps: 0.0,
        }],
        noise_correction: false,
    }
}

pub fn plan(kind: SamplerKind, cfg: &ScheduleConfig, steps: usize) -> Result<SamplerPlan, String> {
    match kind {
        SamplerKind::Ddim => ddim_plan(cfg, steps),
        SamplerKind::Euler => euler_plan(cfg, steps),
        SamplerKind::OneStep if steps == 1 => Ok(one_step_plan(cfg)),
        SamplerKind::OneStep => Err(format!(
            "a one-step generator runs exactly 1 step, not {steps}"
        )),
    }
}

/// a*x + b*y, skipping zero terms.
fn lin<O: Ops>(o: &O, terms: &[(&O::T, f32)]) -> GResult<O::T> {
    let mut acc: Option<O::T> = None;
    for (v, c) in terms {
        if *c == 0.0 {
            continue;
        }
        let term = if *c == 1.0 {
            (*v).clone()
        } else {
            o.scale(v, *c)?
        };
        acc = Some(match acc {
            None => term,
            Some(a) => o.add(&a, &term)?,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => o.scale(terms[0].0, 0.0),
    }
}

/// One step given the model output `out` at state `x`: returns (x0, next state). With
/// `eps_override` the update uses that noise instead of the one implied by `out` (noise
/// correction: the true x_T at the first step, where the predicted noise is uninformative).
pub fn apply_step<O: Ops>(
    o: &O,
    s: &StepPlan,
    x: &O::T,
    out: &O::T,
    eps_override: Option<&O::T>,
) -> GResult<(O::T, O::T)> {
    let mut x0 = lin(o, &[(x, s.x0_x), (out, s.x0_out)])?;
    if let Some(r) = s.clip {
        x0 = o.clamp(&x0, -r, r)?;
    }
    let eps = match (eps_override, s.next_eps != 0.0) {
        (_, false) => None,
        (Some(e), true) => Some(e.clone()),
        (None, true) => Some(lin(o, &[(x, s.eps_x), (out, s.eps_out)])?),
    };
    let mut terms = vec![(x, s.next_x), (&x0, s.next_x0)];
    if let Some(e) = eps.as_ref() {
        terms.push((e, s.next_eps));
    }
    let next = lin(o, &terms)?;
    Ok((x0, next))
}

/// Run a sampler plan from `noise` (and class labels) to a sample. Written once for every backend.
pub fn sample<O: Ops>(
    o: &O,
    model: &Denoiser,
    plan: &SamplerPlan,
    noise: &O::T,
    class_labels: Option<&O::T>,
) -> GResult<O::T> {
    sample_with(o, plan, noise, |x_in, t| {
        model.forward(o, x_in, t, class_labels)
    })
}

/// `sample` with the denoiser as a function of (model input, timestep [1]): lets a black-box
/// model (an ONNX teacher) run the same step maths.
pub fn sample_with<O: Ops, F>(
    o: &O,
    plan: &SamplerPlan,
    noise: &O::T,
    mut model: F,
) -> GResult<O::T>
where
    F: FnMut(&O::T, &O::T) -> GResult<O::T>,
{
    let mut x = if plan.init_sigma != 1.0 {
        o.scale(noise, plan.init_sigma)?
    } else {
        noise.clone()
    };
    let x_t = x.clone();
    for (i, s) in plan.steps.iter().enumerate() {
        x = o.scoped(&format!("step{i}"), || -> GResult<O::T> {
            let t = o.constant(&[s.t as f32], &[1])?;
            let x_in = if s.in_scale != 1.0 {
                o.scale(&x, s.in_scale)?
            } else {
                x.clone()
            };
            let out = o.scoped(flashctl_graphs::ops::DENOISER_SCOPE, || model(&x_in, &t))?;
            let nc = (plan.noise_correction && i == 0).then_some(&x_t);
            Ok(apply_step(o, s, &x, &out, nc)?.1)
        })?;
    }
    Ok(x)
}
