//! End-to-end CLI tests on tiny models: train, sample, export, validate, resume, bad input.

mod common;
use common::{fails, flashctl, ok, s};
use std::path::{Path, PathBuf};

fn runtimes() -> String {
    common::parity_runtimes().join(",")
}

#[test]
fn tiny_mlp_train_sample_export_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    for f in [
        "config.json",
        "model.safetensors",
        "train_state.safetensors",
        "loss.csv",
        "loss.png",
    ] {
        assert!(teacher.join(f).is_file(), "{f} missing");
    }
    let raw = tmp.path().join("x.safetensors");
    ok(&[
        "sample",
        "--model",
        s(&teacher),
        "--steps",
        "8",
        "--count",
        "16",
        "--out",
        s(&raw),
    ]);
    let x = common::load(&raw);
    assert_eq!(x["image"].dims(), &[16, 2]);
    assert!(common::vec(&x["image"]).iter().all(|v| v.is_finite()));

    // parent folders are created
    let graph = tmp.path().join("a/b/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "4",
        "--out",
        s(&graph),
    ]);
    let dir = graph.parent().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["sampler"]["timesteps"],
        serde_json::json!([999, 749, 499, 249])
    );
    assert_eq!(
        manifest["inputs"][0]["shape"],
        serde_json::json!(["batch", "2"])
    );
    let init = manifest["initializer_bytes"].as_f64().unwrap();
    let params = manifest["denoiser_parameter_bytes"].as_f64().unwrap();
    assert!(
        init <= params * 1.05,
        "4-step graph stores {init} B of initializers for {params} B of weights"
    );
    let reference = common::load(&dir.join("reference.safetensors"));
    assert!(reference.contains_key("noise") && reference.contains_key("image"));

    let json = ok(&["validate", s(&graph), "--runtimes", &runtimes(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed"], true);
    for rt in report["runtimes"].as_array().unwrap() {
        assert_eq!(rt["status"], "pass");
        assert!(rt["parity"][0]["max_abs"].as_f64().unwrap() <= 1e-4);
    }

    // graph summary snapshot: an unintended change to the exported graph shows up as a diff
    let bytes = std::fs::read(&graph).unwrap();
    let summary = flashctl_exporters::summarize(&flashctl_exporters::decode_model(&bytes).unwrap());
    insta::assert_json_snapshot!("tiny_mlp_4step_summary", summary);

    // a reference that no longer matches is a parity failure: exit 1
    let mut tampered = reference.clone();
    let img = &tampered["image"];
    tampered.insert("image".into(), (img + 0.01).unwrap());
    let bad_ref = tmp.path().join("bad_ref.safetensors");
    candle_core::safetensors::save(&tampered, &bad_ref).unwrap();
    let o = flashctl(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--reference",
        s(&bad_ref),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn resumed_training_equals_uninterrupted_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let train = |iters: &str, out: &Path, resume: bool| {
        let mut args = vec![
            "teacher",
            "train",
            "--dataset",
            "checkerboard",
            "--preset",
            "tiny",
        ];
        args.extend(["--iters", iters, "--seed", "3", "--out", s(out)]);
        if resume {
            args.push("--resume");
        }
        ok(&args);
    };
    train("40", &a, false);
    train("20", &b, false);
    train("40", &b, true);
    let wa = std::fs::read(a.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(wa == wb, "resumed weights differ from an uninterrupted run");
    let la = std::fs::read_to_string(a.join("loss.csv")).unwrap();
    let lb = std::fs::read_to_string(b.join("loss.csv")).unwrap();
    assert_eq!(la, lb);
}

#[test]
fn time_budget_stops_at_a_checkpoint_that_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec!["teacher", "train", "--dataset", "checkerboard"];
        args.extend(["--preset", "tiny", "--seed", "3", "--out", s(out)]);
        args.extend(extra);
        ok(&args)
    };
    train(&a, &["--iters", "3"]);
    // a zero budget stops after the first iteration, with a checkpoint
    let out = train(&b, &["--iters", "100000", "--time-budget", "0"]);
    assert!(
        out.contains("stopped by --time-budget after 1 of 100000 iterations"),
        "{out}"
    );
    let state = std::fs::read_to_string(b.join("train_state.json")).unwrap();
    assert!(state.contains("\"step\": 1,"), "{state}");
    assert!(b.join("model.safetensors").exists());
    let out = train(&b, &["--iters", "3", "--resume"]);
    assert!(out.contains("2 iters on cpu"), "{out}");
    let wa = std::fs::read(a.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(
        wa == wb,
        "budget-stopped + resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn device_flag_refuses_cuda_without_the_feature_and_typos_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::fixture("models/mlp_teacher");
    let out = tmp.path().join("out");
    let t = s(&teacher);
    let o = s(&out);
    let commands: Vec<Vec<&str>> = vec![
        vec!["teacher", "train", "--dataset", "checkerboard", "--out", o],
        vec!["sample", "--model", t, "--png", o],
        vec!["distill", "--teacher", t, "--steps", "2", "--out", o],
        vec![
            "pairs",
            "generate",
            "--teacher",
            t,
            "--count",
            "4",
            "--out",
            o,
        ],
        vec![
            "eval",
            "--model",
            t,
            "--dataset",
            "checkerboard",
            "--out",
            o,
        ],
    ];
    for cmd in &commands {
        for (device, want) in [
            ("cuda:7", "this flashctl was built without CUDA"),
            ("tpu", "expected cpu, cuda or cuda:N"),
        ] {
            if device.starts_with("cuda") && flashctl::device::CUDA_BUILT {
                continue;
            }
            let mut args = cmd.clone();
            args.extend(["--device", device]);
            let (code, err) = fails(&args);
            assert_eq!(code, 2, "{args:?}");
            assert!(err.contains(want), "{args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
            assert!(!out.exists(), "{args:?} wrote {}", out.display());
        }
    }
}

fn write_png_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::GrayImage::from_fn(8, 8, |x, y| {
            image::Luma([((x * 30 + y * 5 + i as u32 * 17) % 256) as u8])
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
}

#[test]
fn tiny_unet_on_png_folder_exports_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let pngs = tmp.path().join("pngs");
    write_png_folder(&pngs, 6);
    let teacher = tmp.path().join("unet");
    ok(&[
        "teacher",
        "train",
        "--dataset",
        s(&pngs),
        "--image-size",
        "8",
        "--preset",
        "tiny",
        "--iters",
        "3",
        "--out",
        s(&teacher),
    ]);
    ok(&[
        "sample",
        "--model",
        s(&teacher),
        "--steps",
        "2",
        "--count",
        "4",
        "--png",
        s(&tmp.path().join("grid.png")),
    ]);
    assert!(tmp.path().join("grid.png").is_file());
    let graph = tmp.path().join("e/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let json = ok(&["validate", s(&graph), "--runtimes", &runtimes(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed"], true, "{json}");
    let bytes = std::fs::read(&graph).unwrap();
    let summary = flashctl_exporters::summarize(&flashctl_exporters::decode_model(&bytes).unwrap());
    insta::assert_json_snapshot!("tiny_unet_2step_summary", summary);
}

fn write_idx_gz(path: &Path, dims: &[u32], data: &[u8]) {
    use std::io::Write;
    let mut raw = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        raw.extend(d.to_be_bytes());
    }
    raw.extend(data);
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap();
}

#[test]
fn fashion_mnist_idx_class_conditional_unet() {
    // a tiny IDX set in Fashion-MNIST's layout (28x28, 10 labels), read through --data-dir
    let tmp = tempfile::tempdir().unwrap();
    let n = 12u32;
    let pixels: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 7 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    write_idx_gz(
        &tmp.path().join("train-images-idx3-ubyte.gz"),
        &[n, 28, 28],
        &pixels,
    );
    write_idx_gz(
        &tmp.path().join("train-labels-idx1-ubyte.gz"),
        &[n],
        &labels,
    );
    // the held-out split eval scores against
    let test_px: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 13 % 241) as u8).collect();
    write_idx_gz(
        &tmp.path().join("t10k-images-idx3-ubyte.gz"),
        &[n, 28, 28],
        &test_px,
    );
    write_idx_gz(&tmp.path().join("t10k-labels-idx1-ubyte.gz"), &[n], &labels);
    let teacher = tmp.path().join("fm");
    ok(&[
        "teacher",
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(tmp.path()),
        "--preset",
        "tiny",
        "--iters",
        "2",
        "--out",
        s(&teacher),
    ]);
    let graph = tmp.path().join("e/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "1",
        "--out",
        s(&graph),
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("e/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["inputs"][1]["name"], "class_labels");
    assert_eq!(manifest["inputs"][1]["dtype"], "int64");
    // a class-conditional image student, scored with FD-FMNIST against the test split
    let student = tmp.path().join("fm_student");
    ok(&[
        "distill",
        "--teacher",
        s(&teacher),
        "--steps",
        "1",
        "--loss",
        "srl",
        "--iters",
        "2",
        "--batch",
        "4",
        "--out",
        s(&student),
    ]);
    let out = ok(&[
        "eval",
        "--model",
        s(&student),
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(tmp.path()),
        "--count",
        "12",
        "--teacher",
        s(&teacher),
        "--teacher-steps",
        "2",
        "--out",
        s(&tmp.path().join("fm_eval")),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for m in ["fd", "precision", "recall"] {
        assert!(
            r["model"]["metrics"][m].as_f64().unwrap().is_finite(),
            "{m}: {out}"
        );
    }
    assert!(r["psnr_vs_teacher"].as_f64().unwrap().is_finite());
    assert!(std::path::Path::new(r["png"].as_str().unwrap()).is_file());
    ok(&["validate", s(&graph), "--runtimes", &runtimes()]);
    // a truncated IDX file is named in a one-line error
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    write_idx_gz(
        &bad.join("train-images-idx3-ubyte.gz"),
        &[n, 28, 28],
        &pixels[..100],
    );
    write_idx_gz(&bad.join("train-labels-idx1-ubyte.gz"), &[n], &labels);
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(&bad),
        "--preset",
        "tiny",
        "--iters",
        "1",
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn bad_inputs_give_one_line_errors_and_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |r: &str| -> PathBuf { tmp.path().join(r) };
    // missing model directory
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&p("nope")),
        "--steps",
        "2",
        "--out",
        s(&p("o/model.onnx")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !p("o").exists(),
        "a failed export must not leave files behind"
    );
    // unknown dataset
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "imagenet-or-typo",
        "--out",
        s(&p("t")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown dataset"), "{err}");
    // a real teacher, then broken copies of it
    let teacher = p("teacher");
    ok(&[
        "teacher",
        "train",
        "--dataset",
        "gaussian-mixture",
        "--preset",
        "tiny",
        "--iters",
        "5",
        "--out",
        s(&teacher),
    ]);
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "0",
        "--out",
        s(&p("o/model.onnx")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("steps"), "{err}");
    let (code, _) = fails(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "5000",
        "--out",
        s(&p("o/model.onnx")),
    ]);
    assert_eq!(code, 2);
    // truncated weights
    let broken = p("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(teacher.join("config.json"), broken.join("config.json")).unwrap();
    let w = std::fs::read(teacher.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &w[..w.len() / 2]).unwrap();
    let (code, err) = fails(&[
        "sample",
        "--model",
        s(&broken),
        "--steps",
        "2",
        "--png",
        s(&p("x.png")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("truncated"), "{err}");
    // NaN weights
    let mut t = common::load(&teacher.join("model.safetensors"));
    let k = t.keys().next().unwrap().clone();
    let nan = (t[&k].clone() * f64::NAN).unwrap();
    t.insert(k, nan);
    candle_core::safetensors::save(&t, broken.join("model.safetensors")).unwrap();
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&broken),
        "--steps",
        "2",
        "--out",
        s(&p("o/model.onnx")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("NaN"), "{err}");
    // malformed and truncated ONNX
    std::fs::write(p("junk.onnx"), b"definitely not protobuf \xff\xff\xff").unwrap();
    let (code, err) = fails(&["validate", s(&p("junk.onnx"))]);
    assert_eq!(code, 2);
    assert!(err.contains("malformed") || err.contains("ONNX"), "{err}");
    let graph = p("g/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let g = std::fs::read(&graph).unwrap();
    std::fs::write(p("g/cut.onnx"), &g[..g.len() * 2 / 3]).unwrap();
    let (code, _) = fails(&[
        "validate",
        s(&p("g/cut.onnx")),
        "--reference",
        s(&p("g/reference.safetensors")),
    ]);
    assert_eq!(code, 2);
    // NaN in an ONNX weight is refused before any runtime runs
    let mut m = flashctl_exporters::decode_model(&g).unwrap();
    let w = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.raw_data.len() >= 8 && t.data_type == 1)
        .unwrap();
    w.raw_data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(p("g/nan.onnx"), flashctl_exporters::encode_model(&m)).unwrap();
    let (code, err) = fails(&[
        "validate",
        s(&p("g/nan.onnx")),
        "--reference",
        s(&p("g/reference.safetensors")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("NaN or Inf (element 1)"), "{err}");
    // a runtime that is not built in is reported unavailable, never a pass
    let o = flashctl(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract,ort-tensorrt",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let report: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(report["runtimes"][1]["status"], "unavailable");
    // resume without a checkpoint
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--out",
        s(&p("fresh")),
        "--resume",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn named_tolerance_levels_and_smallest_passing_tolerances() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let graph = tmp.path().join("e/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "4",
        "--out",
        s(&graph),
    ]);
    let rts = runtimes();
    // approximate (fp32 1e-4) passes; the report says how far off each output is
    let out = ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        &rts,
        "--tolerance",
        "approximate",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["tolerance"]["atol"], 1e-4);
    for rt in r["runtimes"].as_array().unwrap() {
        let o = &rt["parity"][0];
        let need = o["min_passing_atol"].as_f64().unwrap();
        assert!(
            need <= o["max_abs"].as_f64().unwrap() + 1e-12 && need < 1e-4,
            "{o}"
        );
    }
    // a tighter override than the measured error fails with exit 1 and names what would pass
    let o = common::flashctl(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--atol",
        "1e-12",
        "--rtol",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    if o.status.code() == Some(1) {
        assert!(stdout.contains("would pass with atol >="), "{stdout}");
    } else {
        // tract reproduced eager bit for bit: exact passes too
        assert_eq!(o.status.code(), Some(0), "{stdout}");
    }
    let (code, e) = fails(&["validate", s(&graph), "--tolerance", "loose"]);
    assert_eq!(code, 2);
    assert!(e.contains("very-approximate"), "{e}");
}

/// bench-train times steps of a model's architecture, reports them as JSON, and writes nothing
/// into the model directory (its scratch checkpoint directory is removed).
#[test]
fn bench_train_reports_step_times_and_memory_and_leaves_the_model_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let before: Vec<_> = std::fs::read_dir(&teacher)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = common::ok(&[
        "bench-train",
        "--model",
        common::s(&teacher),
        "--batch",
        "16",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["architecture"], "mlp");
    assert_eq!(r["batch"], 16);
    assert_eq!(r["steps"], 3);
    let p50 = r["p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= r["max_ms"].as_f64().unwrap(), "{r}");
    assert!(r["min_ms"].as_f64().unwrap() <= p50, "{r}");
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["parameters"].as_u64().unwrap() > 0, "{r}");
    let after: Vec<_> = std::fs::read_dir(&teacher)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "bench-train wrote into the model directory"
    );
    // no steps to time, and a directory that is not a model: one line, non-zero
    let (code, _) = common::fails(&[
        "bench-train",
        "--model",
        common::s(&teacher),
        "--steps",
        "0",
    ]);
    assert_eq!(code, 2);
    let (_, err) = common::fails(&["bench-train", "--model", common::s(tmp.path())]);
    assert!(err.contains("config.json"), "{err}");
}

/// A CI gate must never pass vacuously: a graph with no outputs, or a reference holding a
/// tensor the graph does not produce, is bad input (exit 2), never `PASS`.
#[test]
fn validate_refuses_to_pass_when_a_reference_output_is_not_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let graph = tmp.path().join("g/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let reference = tmp.path().join("g/reference.safetensors");
    // 1. zero outputs
    let mut m = flashctl_exporters::decode_model(&std::fs::read(&graph).unwrap()).unwrap();
    m.graph.as_mut().unwrap().output.clear();
    let empty = tmp.path().join("g/no_outputs.onnx");
    std::fs::write(&empty, flashctl_exporters::encode_model(&m)).unwrap();
    let (code, err) = fails(&[
        "validate",
        s(&empty),
        "--runtimes",
        "tract",
        "--reference",
        s(&reference),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no outputs"), "{err}");
    // 2. a reference tensor the graph does not produce
    let mut tensors = common::load(&reference);
    let image = tensors["image"].clone();
    tensors.insert("latent".into(), image);
    let extra = tmp.path().join("extra.safetensors");
    candle_core::safetensors::save(&tensors, &extra).unwrap();
    let (code, err) = fails(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--reference",
        s(&extra),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`latent` is not an output"), "{err}");
    // the untouched pair still passes
    ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--reference",
        s(&reference),
    ]);
}

/// `export --target`: the lowering is recorded in the manifest, validate checks the graph
/// against that target without being told, and a target the lowered graph does not meet is
/// refused before anything is written.
#[test]
fn export_target_lowers_group_norms_records_the_target_and_refuses_what_it_cannot_meet() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::root().join("fixtures/diffusers/unet_uncond_eps");
    let graph = tmp.path().join("ort/model.onnx");
    let out = ok(&[
        "export",
        "--model",
        s(&model),
        "--steps",
        "2",
        "--target",
        "ort-cpu",
        "--out",
        s(&graph),
    ]);
    assert!(
        out.contains("group norms as InstanceNormalization"),
        "{out}"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(graph.with_file_name("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["target"], "ort-cpu");
    let m = flashctl_exporters::decode_model(&std::fs::read(&graph).unwrap()).unwrap();
    let ops = flashctl_exporters::summarize(&m).op_histogram;
    assert!(
        ops.contains_key("InstanceNormalization") && !ops.contains_key("ReduceMean"),
        "{ops:?}"
    );
    let v = ok(&["validate", s(&graph), "--runtimes", "tract"]);
    assert!(v.contains("result: PASS"), "{v}");

    // the same graph relabelled as an ort-mobile export: validate applies that allow-list
    let mut m = manifest.clone();
    m["target"] = "ort-mobile".into();
    std::fs::write(graph.with_file_name("manifest.json"), m.to_string()).unwrap();
    let (code, err) = fails(&["validate", s(&graph), "--runtimes", "tract"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ort-mobile") && err.contains("opset 17"),
        "{err}"
    );

    // ort-mobile: opset 15 unless told otherwise, and then its allow-list holds
    let mobile = tmp.path().join("mobile/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&model),
        "--steps",
        "2",
        "--target",
        "ort-mobile",
        "--out",
        s(&mobile),
    ]);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(mobile.with_file_name("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (m["target"].as_str(), m["opset"].as_i64()),
        (Some("ort-mobile"), Some(15))
    );
    let v = ok(&[
        "validate",
        s(&mobile),
        "--runtimes",
        "tract",
        "--target",
        "ort-mobile",
    ]);
    assert!(v.contains("result: PASS"), "{v}");
    let refused = tmp.path().join("refused/model.onnx");
    for (opset, why) in [("17", "opset 17 outside 12..15"), ("12", "opsets 13..=21")] {
        let (code, err) = fails(&[
            "export",
            "--model",
            s(&model),
            "--steps",
            "2",
            "--target",
            "ort-mobile",
            "--opset",
            opset,
            "--out",
            s(&refused),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!refused.exists() && !refused.with_file_name("manifest.json").exists());
    }
    let mobile = refused;
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&model),
        "--target",
        "coreml",
        "--out",
        s(&mobile),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown --target `coreml`"), "{err}");
}
