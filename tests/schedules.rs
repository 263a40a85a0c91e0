//! Noise schedules and timestep spacings against diffusers' own values.

mod common;
use flashctl::schedule::{BetaSchedule, ScheduleConfig, Spacing};

#[test]
fn alphas_cumprod_match_diffusers() {
    let f = common::load(&common::fixture("diffusers/schedules.safetensors"));
    for (name, bs) in [
        ("linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
    ] {
        for zsnr in [false, true] {
            let cfg = ScheduleConfig {
                beta_schedule: bs,
                rescale_betas_zero_snr: zsnr,
                beta_start: 0.0001,
                beta_end: 0.02,
                ..Default::default()
            };
            let ours = cfg.alphas_cumprod();
            let theirs = common::vec(&f[&format!("alphas_cumprod.{name}.zsnr{}", zsnr as u8)]);
            assert_eq!(ours.len(), theirs.len());
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                let tol = 2e-6 + 2e-5 * b.abs();
                assert!((a - b).abs() <= tol, "{name} zsnr={zsnr} t={i}: {a} vs {b}");
            }
            if zsnr {
                assert_eq!(
                    *ours.last().unwrap(),
                    0.0,
                    "zero terminal SNR must end at alpha_bar = 0"
                );
            }
        }
    }
}

#[test]
fn ddim_timesteps_match_diffusers() {
    let f = common::load(&common::fixture("diffusers/schedules.safetensors"));
    for (name, sp) in [
        ("leading", Spacing::Leading),
        ("trailing", Spacing::Trailing),
        ("linspace", Spacing::Linspace),
    ] {
        for n in [1, 2, 3, 4, 8, 50] {
            let cfg = ScheduleConfig {
                timestep_spacing: sp,
                steps_offset: 0,
                ..Default::default()
            };
            let ours: Vec<f32> = cfg
                .timesteps(n)
                .unwrap()
                .iter()
                .map(|&t| t as f32)
                .collect();
            let theirs = common::vec(&f[&format!("ddim_timesteps.{name}.n{n}")]);
            assert_eq!(ours, theirs, "{name} n={n}");
        }
    }
}

#[test]
fn invalid_step_counts_are_refused() {
    let cfg = ScheduleConfig::default();
    assert!(cfg.timesteps(0).is_err());
    assert!(cfg.timesteps(1001).is_err());
}

#[test]
fn epsilon_prediction_at_zero_terminal_snr_is_refused() {
    let cfg = ScheduleConfig {
        rescale_betas_zero_snr: true,
        ..Default::default()
    };
    let err = flashctl::sampler::ddim_plan(&cfg, 4).unwrap_err();
    assert!(err.contains("singular"), "{err}");
}

#[test]
fn euler_with_the_exact_denoiser_maps_noise_quantiles_to_data_quantiles() {
    // Data x0 ~ N(0, s0^2). The model sees x_in = sqrt(a) x0 + sqrt(1-a) eps, so the optimal
    // epsilon prediction is sqrt(1-a) / (a s0^2 + 1 - a) * x_in. The probability-flow ODE maps a
    // point at +1 std of the initial marginal to +1 std of the data: s0.
    use flashctl::sampler::euler_plan;
    let cfg = ScheduleConfig::default();
    let plan = euler_plan(&cfg, 500).unwrap();
    let ac = cfg.alphas_cumprod();
    let s0 = 0.5f64;
    let sigma_max = ((1.0 - ac[999] as f64) / ac[999] as f64).sqrt();
    let mut x =
        (s0 * s0 + sigma_max * sigma_max).sqrt() / plan.init_sigma as f64 * plan.init_sigma as f64;
    for s in &plan.steps {
        let a = ac[s.t] as f64;
        let x_in = x * s.in_scale as f64;
        let eps = x_in * (1.0 - a).sqrt() / (a * s0 * s0 + 1.0 - a);
        let x0 = s.x0_x as f64 * x + s.x0_out as f64 * eps;
        x = s.next_x as f64 * x + s.next_x0 as f64 * x0;
    }
    assert!(
        (x - s0).abs() < 0.01,
        "Euler (500 steps) ended at {x}, expected {s0}"
    );
}

/// Step counts where float rounding in numpy's arange/linspace decides the timesteps (and where
/// numpy's trailing arange yields an invalid -1 or an extra step, which flashctl refuses).
#[test]
fn trailing_and_linspace_follow_numpy_rounding() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("numpy_timesteps.json")).unwrap(),
    )
    .unwrap();
    for case in v["cases"].as_array().unwrap() {
        let steps = case["steps"].as_u64().unwrap() as usize;
        for (spacing, key) in [
            (Spacing::Trailing, "trailing"),
            (Spacing::Linspace, "linspace"),
        ] {
            let want: Vec<i64> = serde_json::from_value(case[key].clone()).unwrap();
            let cfg = ScheduleConfig {
                timestep_spacing: spacing,
                ..Default::default()
            };
            let got = cfg.timesteps(steps);
            if want.len() == steps && want.iter().all(|&t| t >= 0) {
                let got: Vec<i64> = got.unwrap().into_iter().map(|t| t as i64).collect();
                assert_eq!(got, want, "{key} {steps}");
            } else {
                assert!(
                    got.is_err(),
                    "{key} {steps}: numpy gives {want:?}, flashctl must refuse"
                );
            }
        }
    }
}
