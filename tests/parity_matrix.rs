//! Every case x every runtime, from one table (the model is tract's test-rt suite x runtime
//! matrix). A case is a fixture model exported one way; each runtime that is available here runs
//! it and must match the eager reference within the precision's bound relative to the output
//! scale (fp32 1e-5, fp16 1e-2, no NaN/Inf) and the golden outputs under fixtures/goldens.
//! Unavailable runtimes (ORT CUDA/TensorRT without a GPU) are listed, not silently passed.
//!
//! Regenerate the goldens after an intended numerical change:
//! `FLASHCTL_UPDATE_GOLDENS=1 cargo test --release --test parity_matrix`, then review and commit.

mod common;

use flashctl::export::{self, ExportTarget, GraphForm, Precision};
use flashctl::validation::{self, ValidateOptions};
use flashctl_validate::ValidateError;
use std::path::Path;

struct Case {
    name: &'static str,
    /// fixture model directory, relative to the repository root
    model: &'static str,
    steps: Option<usize>,
    precision: Precision,
    /// lowering (`export --target`)
    target: ExportTarget,
    /// `export --opset` (None: the target's)
    opset: Option<i64>,
    denoiser_only: bool,
    /// max abs error / output scale allowed; None: the precision's (fp32 1e-5, fp16 1e-2)
    bound: Option<f64>,
}

const fn case(name: &'static str, model: &'static str, steps: Option<usize>) -> Case {
    Case {
        name,
        model,
        steps,
        precision: Precision::Fp32,
        target: ExportTarget::Generic,
        opset: None,
        denoiser_only: false,
        bound: None,
    }
}

const CASES: &[Case] = &[
    case("mlp_teacher_ddim4", "fixtures/models/mlp_teacher", Some(4)),
    Case {
        precision: Precision::Fp16,
        ..case(
            "mlp_teacher_ddim4_fp16",
            "fixtures/models/mlp_teacher",
            Some(4),
        )
    },
    // Imagine Flash student: 2 steps with noise correction
    case("mlp_if2", "fixtures/models/mlp_if2", None),
    // KDM one-step generator (eigen Koopman)
    case("mlp_kdm", "fixtures/models/mlp_kdm", None),
    // eps prediction: step 0 forms x0 = (x - sqrt(1-ab) eps) / sqrt(ab) at t = 999, which
    // multiplies the denoiser's ~1e-7 rounding by 1/sqrt(ab_999) ~ 157 (`validate --bisect
    // --atol 1e-5` names step0/Clip_0, after 487 matching nodes); measured tract 1.4e-5 here,
    // the bound leaves room for other CPUs' kernels (still 2x inside validate's fp32 atol 1e-4)
    Case {
        bound: Some(5e-5),
        ..case(
            "unet_uncond_eps_ddim2",
            "fixtures/diffusers/unet_uncond_eps",
            Some(2),
        )
    },
    case(
        "unet_class_vpred_ddim2",
        "fixtures/diffusers/unet_class_vpred",
        Some(2),
    ),
    Case {
        precision: Precision::Fp16,
        ..case(
            "unet_class_vpred_ddim2_fp16",
            "fixtures/diffusers/unet_class_vpred",
            Some(2),
        )
    },
    Case {
        denoiser_only: true,
        ..case(
            "unet_uncond_eps_denoiser",
            "fixtures/diffusers/unet_uncond_eps",
            None,
        )
    },
    // target lowerings: group norms as InstanceNormalization (ORT CPU's and ORT CUDA's form)
    Case {
        target: ExportTarget::OrtCpu,
        ..case(
            "unet_class_vpred_ddim2_ort_cpu",
            "fixtures/diffusers/unet_class_vpred",
            Some(2),
        )
    },
    Case {
        target: ExportTarget::OrtCpu,
        precision: Precision::Fp16,
        ..case(
            "unet_class_vpred_ddim2_fp16_ort_cpu",
            "fixtures/diffusers/unet_class_vpred",
            Some(2),
        )
    },
    // opset 18+: ReduceMean takes its axes as an input; 13: the oldest opset flashctl writes
    Case {
        opset: Some(21),
        bound: Some(5e-5), // the eps-prediction fixture's step-0 amplification, as above
        ..case(
            "unet_uncond_eps_ddim2_opset21",
            "fixtures/diffusers/unet_uncond_eps",
            Some(2),
        )
    },
    Case {
        target: ExportTarget::OrtMobile,
        ..case("mlp_if2_ort_mobile", "fixtures/models/mlp_if2", None)
    },
    Case {
        opset: Some(13),
        target: ExportTarget::OrtCpu,
        ..case(
            "unet_class_vpred_ddim2_opset13_ort_cpu",
            "fixtures/diffusers/unet_class_vpred",
            Some(2),
        )
    },
    Case {
        target: ExportTarget::OrtCuda,
        denoiser_only: true,
        ..case(
            "unet_uncond_eps_denoiser_ort_cuda",
            "fixtures/diffusers/unet_uncond_eps",
            None,
        )
    },
];

/// Measured deviations beyond the precision's bound, allowed per (case, runtime) with the reason;
/// each is reported in docs/results.md. Anything not listed must meet the bound.
const KNOWN_DEVIATIONS: &[(&str, &str, f64)] = &[
    // tract 0.23's f16 path is less accurate than ORT CPU's (which runs fp32 kernels between
    // casts, 2.7e-3);
    // `validate --bisect` names up_blocks.1.resnets.0.norm2/norm_stats/Div_0: a group whose
    // variance is tiny in this random-weight fixture amplifies the conv's fp16 rounding.
    // Measured 1.95e-2 here; the bound leaves room for other CPUs' f16 kernels.
    ("unet_class_vpred_ddim2_fp16", "tract", 4e-2),
    // the same graph with its group norms as InstanceNormalization: the same tract f16 path,
    // measured 1.65e-2
    ("unet_class_vpred_ddim2_fp16_ort_cpu", "tract", 4e-2),
];

const RUNTIMES: &[&str] = &["tract", "ort-cpu", "candle", "ort-cuda", "ort-tensorrt"];

fn export_case(c: &Case, dir: &Path) -> std::path::PathBuf {
    let graph = dir.join(c.name).join(format!("{}.onnx", c.name));
    let model = common::root().join(c.model);
    let form = GraphForm {
        precision: c.precision,
        target: c.target,
        opset: c.opset,
    };
    let r = if c.denoiser_only {
        export::export_denoiser(&model, form, &graph).unwrap()
    } else {
        export::export(&model, c.steps, None, form, &graph).unwrap()
    };
    if matches!(c.target, ExportTarget::OrtCpu | ExportTarget::OrtCuda) {
        assert!(r.lowered_group_norms > 0, "{}: nothing lowered", c.name);
    }
    graph
}

#[test]
fn every_case_in_every_available_runtime_matches_reference_and_golden() {
    let require_ort = common::ort_available();
    let tmp = tempfile::tempdir().unwrap();
    let goldens = common::root().join("fixtures/goldens");
    let update = std::env::var("FLASHCTL_UPDATE_GOLDENS").as_deref() == Ok("1");
    let mut table = vec![];
    for c in CASES {
        let graph = export_case(c, tmp.path());
        if update {
            validation::update_golden(&graph, None, &goldens).unwrap();
        }
        let reference =
            validation::load_reference(&graph.with_file_name("reference.safetensors")).unwrap();
        let out_name = if c.denoiser_only {
            "denoiser_out"
        } else {
            "image"
        };
        let scale = common::vec(&reference[out_name])
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-6) as f64;
        let bound = c.bound.unwrap_or(match c.precision {
            Precision::Fp32 => 1e-5,
            Precision::Fp16 => 1e-2,
        });
        let precision = validation::graph_precision(&graph);
        assert_eq!(
            precision,
            c.precision.name(),
            "{}: manifest precision",
            c.name
        );
        for rt in RUNTIMES {
            match validation::make_runtime(rt, &graph) {
                Err(ValidateError::Unavailable { reason, .. }) => {
                    assert!(
                        !(*rt == "ort-cpu" && require_ort) && *rt != "tract" && *rt != "candle",
                        "{rt} must be available here: {reason}"
                    );
                    table.push(format!("{:<28} {:<13} unavailable: {reason}", c.name, rt));
                    continue;
                }
                Err(e) => panic!("{rt}: {e}"),
                Ok(_) => {}
            }
            let known = KNOWN_DEVIATIONS
                .iter()
                .find(|(n, r, _)| *n == c.name && r == rt)
                .map(|k| k.2);
            let bound = known.unwrap_or(bound);
            let mut tol = validation::default_tolerance(&precision);
            if known.is_some() {
                tol.atol = bound * scale;
            }
            let mut opts = ValidateOptions::new(tol);
            opts.runs = 0;
            opts.golden = Some(goldens.clone());
            let r = validation::validate_with(&graph, None, &[rt.to_string()], &opts)
                .unwrap_or_else(|e| panic!("{} / {rt}: {e:#}", c.name));
            let run = &r.runtimes[0];
            assert_eq!(run.status, "pass", "{} / {rt}: {:?}", c.name, run);
            let g = r.golden.as_ref().unwrap();
            let golden = &g.runtimes[0];
            assert_eq!(
                golden.status, "pass",
                "{} / {rt} golden: {:?}",
                c.name, golden
            );
            let s = &run.parity[0];
            assert_eq!(s.non_finite, 0, "{} / {rt}", c.name);
            let rel = s.max_abs / scale;
            assert!(
                rel <= bound,
                "{} / {rt}: max abs {:.3e} = {rel:.3e} of the output scale {scale:.3} (bound {bound:e})",
                c.name,
                s.max_abs
            );
            table.push(format!(
                "{:<28} {:<13} max abs {:.3e}  rel-to-scale {:.3e}  golden max abs {:.3e}{}",
                c.name,
                rt,
                s.max_abs,
                rel,
                golden.parity[0].max_abs,
                if g.graph_changed == Some(true) {
                    " (graph changed since blessed)"
                } else {
                    ""
                }
            ));
        }
    }
    println!("{}", table.join("\n"));
}
