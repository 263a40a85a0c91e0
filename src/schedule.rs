//! Noise schedules as pure functions, matching diffusers' DDPM/DDIM schedulers.
//!
//! Reference: diffusers `schedulers/scheduling_ddim.py` (`betas_for_alpha_bar`,
//! `rescale_zero_terminal_snr`, `set_timesteps`). Checked against
//! `fixtures/diffusers/schedules.safetensors` in tests.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    Epsilon,
    #[serde(rename = "v_prediction")]
    V,
    #[serde(rename = "sample")]
    X0,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// The scheduler fields flashctl uses, named as in diffusers' `scheduler_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub beta_start: f64,
    pub beta_end: f64,
    pub rescale_betas_zero_snr: bool,
    pub prediction_type: Prediction,
    pub timestep_spacing: Spacing,
    pub steps_offset: usize,
    pub set_alpha_to_one: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::Linear,
            beta_start: 1e-4,
            beta_end: 0.02,
            rescale_betas_zero_snr: false,
            prediction_type: Prediction::Epsilon,
            timestep_spacing: Spacing::Trailing,
            steps_offset: 0,
            set_alpha_to_one: true,
            clip_sample: false,
            clip_sample_range: 1.0,
        }
    }
}

/// torch.linspace in float32: the first half counts up from start, the second half down from end.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

pub fn betas(beta_schedule: BetaSchedule, n: usize, beta_start: f64, beta_end: f64) -> Vec<f32> {
    match beta_schedule {
        BetaSchedule::Linear => linspace_f32(beta_start as f32, beta_end as f32, n),
        BetaSchedule::ScaledLinear => {
            linspace_f32(beta_start.sqrt() as f32, beta_end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => {
            // computed in float64 by diffusers, then stored as float32
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

fn cumprod(alphas: &[f32]) -> Vec<f32> {
    let mut acc = 1f32;
    alphas
        .iter()
        .map(|a| {
            acc *= a;
            acc
        })
        .collect()
}

/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed": shift and
/// scale sqrt(alpha_bar) so the last step has zero SNR, keeping the first unchanged.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_ab: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (a0, at) = (sqrt_ab[0], *sqrt_ab.last().unwrap());
    for v in sqrt_ab.iter_mut() {
        *v -= at;
        *v *= a0 / (a0 - at);
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}

impl ScheduleConfig {
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let mut b = betas(
            self.beta_schedule,
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
        );
        if self.rescale_betas_zero_snr {
            b = rescale_zero_terminal_snr(&b);
        }
        cumprod(&b.iter().map(|b| 1.0 - b).collect::<Vec<_>>())
    }

    /// diffusers `DDIMScheduler.set_timesteps`: descending integer timesteps.
    pub fn timesteps(&self, steps: usize) -> Result<Vec<usize>, String> {
        let n = self.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(format!(
                "steps must be from 1 to {n} (the training timesteps), got {steps}"
            ));
        }
        let ts: Vec<i64> = match self.timestep_spacing {
            // np.linspace(0, n - 1, steps): i * step in f64, the last value exactly n - 1
            Spacing::Linspace => {
                let stop = (n - 1) as f64;
                let step = if steps > 1 {
                    stop / (steps - 1) as f64
                } else {
                    0.0
                };
                (0..steps)
                    .rev()
                    .map(|i| {
                        let v = if i + 1 == steps && steps > 1 {
                            stop
                        } else {
                            i as f64 * step
                        };
                        round_half_even(v) as i64
                    })
                    .collect()
            }
            Spacing::Leading => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as i64)
                    .collect()
            }
            // np.round(np.arange(n, 0, -n / steps)) - 1: numpy's length ceil(n / ratio) and
            // values start + i * ((start - ratio) - start)
            Spacing::Trailing => {
                let (start, ratio) = (n as f64, n as f64 / steps as f64);
                let len = (start / ratio).ceil() as usize;
                let delta = (start - ratio) - start;
                if len != steps {
                    return Err(format!(
                        "trailing spacing gives {len} timesteps for {steps} steps (numpy float rounding); choose another step count"
                    ));
                }
                (0..len)
                    .map(|i| round_half_even(start + i as f64 * delta) as i64 - 1)
                    .collect()
            }
        };
        if let Some(&bad) = ts.iter().find(|&&t| t < 0 || t as usize >= n) {
            return Err(format!(
                "timestep {bad} out of range for {n} training steps"
            ));
        }
        Ok(ts.into_iter().map(|t| t as usize).collect())
    }
}

/// numpy's round: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}
