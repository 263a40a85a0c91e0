//! Bringing a teacher: diffusers directories and ONNX denoisers through the CLI (`teacher run`,
//! `sample --inputs`), against the outputs diffusers computed (fixtures/diffusers), and every
//! bad-checkpoint case as a one-line error naming the key, option or file.

mod common;
use candle_core::{DType, Device, Tensor};
use common::{fails, ok, s};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CASES: [&str; 2] = ["unet_uncond_eps", "unet_class_vpred"];

fn fixture_dir(case: &str) -> PathBuf {
    common::fixture(&format!("diffusers/{case}"))
}

fn ddim_steps(case: &str) -> String {
    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir(case).join("case.json")).unwrap(),
    )
    .unwrap();
    c["ddim_steps"].to_string()
}

/// `teacher run` and `sample --inputs` on `model`, compared with diffusers' outputs.
fn check_cli_against_diffusers(model: &Path, case: &str, runtime: &str, tmp: &Path) {
    let io_path = fixture_dir(case).join("io.safetensors");
    let io = common::load(&io_path);
    let run = tmp.join(format!("{case}.{runtime}.run.safetensors"));
    ok(&[
        "teacher",
        "run",
        "--model",
        s(model),
        "--inputs",
        s(&io_path),
        "--out",
        s(&run),
        "--runtime",
        runtime,
    ]);
    let got = &common::load(&run)["denoiser_out"];
    let err = common::rel_err(got, &io["denoiser_out"]);
    println!(
        "{case} via {}: teacher run rel err {err:.2e}",
        model.display()
    );
    assert!(err <= 1e-4, "{case}: teacher run differs by {err:.3e}");
    let out = tmp.join(format!("{case}.{runtime}.sample.safetensors"));
    let steps = ddim_steps(case);
    ok(&[
        "sample",
        "--model",
        s(model),
        "--steps",
        &steps,
        "--inputs",
        s(&io_path),
        "--out",
        s(&out),
        "--runtime",
        runtime,
    ]);
    let got = &common::load(&out)["image"];
    let err = common::rel_err(got, &io["ddim_sample"]);
    println!(
        "{case} via {}: DDIM sample rel err {err:.2e}",
        model.display()
    );
    assert!(err <= 1e-3, "{case}: DDIM sample differs by {err:.3e}");
}

#[test]
fn diffusers_directories_match_diffusers_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        check_cli_against_diffusers(&fixture_dir(case), case, "tract", tmp.path());
    }
}

#[test]
fn pipeline_layout_with_sibling_scheduler_folder_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "unet_class_vpred";
    let pipe = tmp.path().join("pipeline");
    std::fs::create_dir_all(pipe.join("unet")).unwrap();
    std::fs::create_dir_all(pipe.join("scheduler")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture_dir(case).join(f), pipe.join("unet").join(f)).unwrap();
    }
    std::fs::copy(
        fixture_dir(case).join("scheduler_config.json"),
        pipe.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    check_cli_against_diffusers(&pipe, case, "tract", tmp.path());
    // the unet/ folder alone finds its scheduler in the sibling folder too
    check_cli_against_diffusers(&pipe.join("unet"), case, "tract", tmp.path());
}

#[test]
fn integer_timesteps_and_labels_give_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "unet_class_vpred";
    let io = common::load(&fixture_dir(case).join("io.safetensors"));
    let mut ints: HashMap<String, Tensor> = HashMap::new();
    ints.insert("x".into(), io["x"].clone());
    ints.insert("t".into(), io["t"].to_dtype(DType::I64).unwrap());
    ints.insert(
        "class_labels".into(),
        io["class_labels"].to_dtype(DType::I64).unwrap(),
    );
    let p = tmp.path().join("ints.safetensors");
    candle_core::safetensors::save(&ints, &p).unwrap();
    let out = tmp.path().join("out.safetensors");
    ok(&[
        "teacher",
        "run",
        "--model",
        s(&fixture_dir(case)),
        "--inputs",
        s(&p),
        "--out",
        s(&out),
    ]);
    let err = common::rel_err(&common::load(&out)["denoiser_out"], &io["denoiser_out"]);
    assert!(err <= 1e-4, "int inputs: {err:.3e}");
}

/// A copy of a fixture directory to break.
fn copy_case(case: &str, to: &Path) -> PathBuf {
    let dir = to.join(case);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
    ] {
        std::fs::copy(fixture_dir(case).join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_json(path: &Path, key: &str, value: serde_json::Value) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let p = dir.join("diffusion_pytorch_model.safetensors");
    let mut w = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    f(&mut w);
    candle_core::safetensors::save(&w, &p).unwrap();
}

fn run_fails(model: &Path) -> String {
    let io = fixture_dir("unet_class_vpred").join("io.safetensors");
    let out = model.join("out.safetensors");
    let (code, err) = fails(&[
        "teacher",
        "run",
        "--model",
        s(model),
        "--inputs",
        s(&io),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!out.exists(), "nothing may be written on failure");
    err
}

#[test]
fn bad_diffusers_checkpoints_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "unet_class_vpred";
    let key = "mid_block.attentions.0.to_q.weight";

    let d = copy_case(case, &tmp.path().join("missing"));
    edit_weights(&d, |w| {
        w.remove(key);
    });
    let e = run_fails(&d);
    assert!(e.contains("missing tensor") && e.contains(key), "{e}");

    let d = copy_case(case, &tmp.path().join("shape"));
    edit_weights(&d, |w| {
        w.insert(
            key.into(),
            Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = run_fails(&d);
    assert!(e.contains(key) && e.contains("[3, 5]"), "{e}");

    let d = copy_case(case, &tmp.path().join("extra"));
    edit_weights(&d, |w| {
        w.insert(
            "time_embedding.cond_proj.weight".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = run_fails(&d);
    assert!(e.contains("time_embedding.cond_proj.weight"), "{e}");

    let d = copy_case(case, &tmp.path().join("nan"));
    edit_weights(&d, |w| {
        let t = Tensor::full(f32::NAN, w["conv_in.bias"].dims(), &Device::Cpu).unwrap();
        w.insert("conv_in.bias".into(), t);
    });
    let e = run_fails(&d);
    assert!(e.contains("conv_in.bias") && e.contains("NaN"), "{e}");

    for (k, v, needle) in [
        (
            "resnet_time_scale_shift",
            serde_json::json!("ada_group"),
            "`resnet_time_scale_shift` = \"ada_group\"",
        ),
        (
            "time_embedding_type",
            serde_json::json!("fourier"),
            "`time_embedding_type` = \"fourier\"",
        ),
        (
            "upsample_type",
            serde_json::json!("resnet"),
            "`upsample_type` = \"resnet\"",
        ),
        (
            "class_embed_type",
            serde_json::json!("timestep"),
            "`class_embed_type`",
        ),
        (
            "addition_embed_type",
            serde_json::json!("text"),
            "`addition_embed_type`",
        ),
    ] {
        let d = copy_case(case, &tmp.path().join(k));
        edit_json(&d.join("config.json"), k, v);
        let e = run_fails(&d);
        assert!(e.contains(needle), "{k}: {e}");
    }
    let d = copy_case(case, &tmp.path().join("sched"));
    edit_json(
        &d.join("scheduler_config.json"),
        "thresholding",
        serde_json::json!(true),
    );
    let e = run_fails(&d);
    assert!(e.contains("`thresholding`"), "{e}");

    let d = copy_case(case, &tmp.path().join("truncated"));
    let w = d.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = run_fails(&d);
    assert!(
        e.contains("diffusion_pytorch_model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    let d = copy_case(case, &tmp.path().join("nosched"));
    std::fs::remove_file(d.join("scheduler_config.json")).unwrap();
    let e = run_fails(&d);
    assert!(e.contains("scheduler_config.json"), "{e}");
}

#[test]
fn onnx_teacher_exported_by_flashctl_matches_the_native_model() {
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let graph = tmp.path().join(case).join("denoiser.onnx");
        ok(&[
            "export",
            "--model",
            s(&fixture_dir(case)),
            "--denoiser-only",
            "--out",
            s(&graph),
        ]);
        assert!(graph.with_extension("teacher.json").is_file());
        for rt in common::parity_runtimes() {
            check_cli_against_diffusers(&graph, case, rt, tmp.path());
        }
    }
}

#[test]
fn onnx_teacher_without_sidecar_or_with_wrong_names_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "unet_uncond_eps";
    let graph = tmp.path().join("denoiser.onnx");
    ok(&[
        "export",
        "--model",
        s(&fixture_dir(case)),
        "--denoiser-only",
        "--out",
        s(&graph),
    ]);
    let sidecar = graph.with_extension("teacher.json");
    let io = fixture_dir(case).join("io.safetensors");
    let out = tmp.path().join("o.safetensors");
    let args = [
        "teacher",
        "run",
        "--model",
        s(&graph),
        "--inputs",
        s(&io),
        "--out",
        s(&out),
    ];

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    v["inputs"]["timestep"] = "timesteps".into();
    std::fs::write(&sidecar, v.to_string()).unwrap();
    let (code, e) = fails(&args);
    assert_eq!(code, 2);
    assert!(e.contains("`timesteps`"), "{e}");

    std::fs::remove_file(&sidecar).unwrap();
    let (code, e) = fails(&args);
    assert_eq!(code, 2);
    assert!(e.contains("denoiser.teacher.json"), "{e}");
    assert!(!out.exists());
}

#[test]
fn diffusers_teachers_distil_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let rts = common::parity_runtimes().join(",");
    for case in CASES {
        // the teacher's own sampler as one graph
        let g = tmp.path().join(format!("{case}/teacher/model.onnx"));
        ok(&[
            "export",
            "--model",
            s(&fixture_dir(case)),
            "--steps",
            "3",
            "--out",
            s(&g),
        ]);
        ok(&["validate", s(&g), "--runtimes", &rts]);
        // an Imagine Flash student initialised from it (epsilon and v teachers), exported with
        // its noise correction
        let student = tmp.path().join(format!("{case}/student"));
        ok(&[
            "distill",
            "--teacher",
            s(&fixture_dir(case)),
            "--steps",
            "2",
            "--iters",
            "2",
            "--batch",
            "2",
            "--out",
            s(&student),
        ]);
        let g = tmp.path().join(format!("{case}/student_export/model.onnx"));
        ok(&["export", "--model", s(&student), "--out", s(&g)]);
        ok(&["validate", s(&g), "--runtimes", &rts]);
    }
}
