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
}

/// (x0_x, x0_out, eps_x, eps_out) for the parameterisation at alpha_bar `a` (float32 as torch).
fn prediction_coeffs(p: Prediction, a: f32, t: usize) -> Result<(f32, f32, f32, f32), String> {
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
        let (x0_x, x0_out, eps_x, eps_out) = prediction_coeffs(cfg.prediction_type, a, t)?;
        plan.push(StepPlan {
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
        });
    }
    Ok(SamplerPlan {
        kind: SamplerKind::Ddim,
        timesteps,
        init_sigma: 1.0,
        steps: plan,
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
    })
}

pub fn plan(kind: SamplerKind, cfg: &ScheduleConfig, steps: usize) -> Result<SamplerPlan, String> {
    match kind {
        SamplerKind::Ddim => ddim_plan(cfg, steps),
        SamplerKind::Euler => euler_plan(cfg, steps),
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

/// Run a sampler plan from `noise` (and class labels) to a sample. Written once for every backend.
pub fn sample<O: Ops>(
    o: &O,
    model: &Denoiser,
    plan: &SamplerPlan,
    noise: &O::T,
    class_labels: Option<&O::T>,
) -> GResult<O::T> {
    let mut x = if plan.init_sigma != 1.0 {
        o.scale(noise, plan.init_sigma)?
    } else {
        noise.clone()
    };
    for (i, s) in plan.steps.iter().enumerate() {
        x = o.scoped(&format!("step{i}"), || -> GResult<O::T> {
            let t = o.constant(&[s.t as f32], &[1])?;
            let x_in = if s.in_scale != 1.0 {
                o.scale(&x, s.in_scale)?
            } else {
                x.clone()
            };
            let out = model.forward(o, &x_in, &t, class_labels)?;
            let mut x0 = lin(o, &[(&x, s.x0_x), (&out, s.x0_out)])?;
            if let Some(r) = s.clip {
                x0 = o.clamp(&x0, -r, r)?;
            }
            let eps = if s.next_eps != 0.0 {
                Some(lin(o, &[(&x, s.eps_x), (&out, s.eps_out)])?)
            } else {
                None
            };
            let mut terms = vec![(&x, s.next_x), (&x0, s.next_x0)];
            if let Some(e) = eps.as_ref() {
                terms.push((e, s.next_eps));
            }
            lin(o, &terms)
        })?;
    }
    Ok(x)
}
