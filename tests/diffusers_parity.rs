//! The UNet and DDIM sampler against outputs computed by diffusers itself
//! (fixtures/diffusers, see its README), and the traced graph of the same sampler in tract and
//! ONNX Runtime.

mod common;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use flashctl::models::{Denoiser, UnetConfig};
use flashctl::sampler::{ddim_plan, sample, SamplerPlan};
use flashctl::schedule::ScheduleConfig;
use flashctl_graphs::EagerOps;
use flashctl_validate::HostTensor;

struct Case {
    denoiser: Denoiser,
    schedule: ScheduleConfig,
    steps: usize,
    io: std::collections::HashMap<String, Tensor>,
    vb: VarBuilder<'static>,
}

fn case(name: &str) -> Case {
    let dir = common::fixture(&format!("diffusers/{name}"));
    let cfg: UnetConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let schedule: ScheduleConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scheduler_config.json")).unwrap())
            .unwrap();
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let weights = common::load(&dir.join("diffusion_pytorch_model.safetensors"));
    Case {
        denoiser: Denoiser::Unet(cfg),
        schedule,
        steps: case["ddim_steps"].as_u64().unwrap() as usize,
        io: common::load(&dir.join("io.safetensors")),
        vb: VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    }
}

fn labels(c: &Case) -> Option<Tensor> {
    c.io.get("class_labels")
        .map(|l| l.to_dtype(DType::I64).unwrap())
}

fn check_denoiser(name: &str) {
    let c = case(name);
    let ops = EagerOps::new(c.vb.clone());
    let y = labels(&c);
    let out = c
        .denoiser
        .forward(&ops, &c.io["x"], &c.io["t"], y.as_ref())
        .unwrap();
    let err = common::rel_err(&out, &c.io["denoiser_out"]);
    println!("{name}: denoiser rel err {err:.3e}");
    assert!(
        err <= 1e-4,
        "{name}: denoiser output differs from diffusers by {err:.3e} (relative)"
    );
}

fn truncated(plan: &SamplerPlan, n: usize) -> SamplerPlan {
    SamplerPlan {
        steps: plan.steps[..n].to_vec(),
        timesteps: plan.timesteps[..n].to_vec(),
        ..plan.clone()
    }
}

fn check_ddim(name: &str) {
    let c = case(name);
    let plan = ddim_plan(&c.schedule, c.steps).unwrap();
    let want_ts = common::vec(&c.io["ddim_timesteps"]);
    assert_eq!(
        plan.timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>(),
        want_ts
    );
    let ops = EagerOps::new(c.vb.clone());
    let y = labels(&c);
    for i in 0..c.steps {
        let x = sample(
            &ops,
            &c.denoiser,
            &truncated(&plan, i + 1),
            &c.io["x_T"],
            y.as_ref(),
        )
        .unwrap();
        let err = common::rel_err(&x, &c.io[&format!("ddim_x_after_step_{i}")]);
        println!("{name}: after step {i} rel err {err:.3e}");
        assert!(
            err <= 1e-3,
            "{name}: DDIM step {i} differs from diffusers by {err:.3e}"
        );
    }
    let x = sample(&ops, &c.denoiser, &plan, &c.io["x_T"], y.as_ref()).unwrap();
    assert!(common::rel_err(&x, &c.io["ddim_sample"]) <= 1e-3);
}

/// Trace the 2-step sampler of the fixture UNet, run it in tract and ORT, compare with eager.
fn check_traced(name: &str) {
    let c = case(name);
    let plan = truncated(&ddim_plan(&c.schedule, c.steps).unwrap(), 2);
    let d = &c.denoiser;
    let graph = flashctl::export::trace_denoiser_sampler(c.vb.clone(), d, &plan).unwrap();
    let bytes = common::onnx_bytes(&graph);
    let eager = sample(
        &EagerOps::new(c.vb.clone()),
        d,
        &plan,
        &c.io["x_T"],
        labels(&c).as_ref(),
    )
    .unwrap();
    let mut inputs = vec![HostTensor::f32(
        "noise",
        c.io["x_T"].dims().to_vec(),
        common::vec(&c.io["x_T"]),
    )];
    if let Some(l) = labels(&c) {
        inputs.push(HostTensor::i64(
            "class_labels",
            vec![l.dims()[0]],
            l.to_vec1().unwrap(),
        ));
    }
    let expect = common::vec(&eager);
    let scale = expect.iter().fold(0f32, |m, v| m.max(v.abs()));
    for rt_name in common::parity_runtimes() {
        let got = common::run_first_output(rt_name, &bytes, &inputs);
        let err = common::max_abs(&got, &expect) / scale;
        println!("{name} traced 2-step in {rt_name}: rel err {err:.3e}");
        assert!(
            err <= 1e-4,
            "{name}: {rt_name} differs from eager by {err:.3e}"
        );
    }
}

#[test]
fn unet_uncond_eps_denoiser_matches_diffusers() {
    check_denoiser("unet_uncond_eps");
}
#[test]
fn unet_class_vpred_denoiser_matches_diffusers() {
    check_denoiser("unet_class_vpred");
}
#[test]
fn unet_uncond_eps_ddim_trajectory_matches_diffusers() {
    check_ddim("unet_uncond_eps");
}
#[test]
fn unet_class_vpred_ddim_trajectory_matches_diffusers() {
    check_ddim("unet_class_vpred");
}
#[test]
fn unet_uncond_eps_traced_sampler_matches_eager_in_tract_and_ort() {
    check_traced("unet_uncond_eps");
}
#[test]
fn unet_class_vpred_traced_sampler_matches_eager_in_tract_and_ort() {
    check_traced("unet_class_vpred");
}
