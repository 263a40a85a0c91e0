//! KDM end to end on tiny models: pairs generate (kill and resume to identical bytes), bad pairs
//! directories, distill --method kdm (dense, eigen, adversarial, class-conditional) -> sample,
//! eval, export as one graph -> validate in tract and ORT CPU.

mod common;
use common::{fails, ok, s};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn hashes(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                flashctl::checkpoint::sha256_hex(&bytes),
            )
        })
        .collect()
}

fn generate(teacher: &Path, out: &Path, count: &str, shard: &str) -> Vec<String> {
    [
        "pairs",
        "generate",
        "--teacher",
        s(teacher),
        "--count",
        count,
        "--steps",
        "20",
        "--shard-size",
        shard,
        "--out",
        s(out),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect()
}

fn listed_shards(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("index.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["shards"].as_array().map(|a| a.len()).unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn pairs_generate_killed_midway_resumes_to_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let (count, shard) = ("60000", "2000");
    // reference: one uninterrupted run
    let whole = tmp.path().join("whole");
    let args = generate(&teacher, &whole, count, shard);
    ok(&args.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    // killed with SIGKILL once some (not all) shards are listed
    let cut = tmp.path().join("cut");
    let args = generate(&teacher, &cut, count, shard);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flashctl"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while listed_shards(&cut) < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "generation finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    let listed = listed_shards(&cut);
    assert!(
        (2..30).contains(&listed),
        "killed after {listed} of 30 shards"
    );
    // the half-made directory is refused for training, naming what to do
    let (code, e) = fails(&[
        "distill",
        "--method",
        "kdm",
        "--pairs",
        s(&cut),
        "--out",
        s(&tmp.path().join("never")),
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("incomplete") && e.contains("rerun"), "{e}");
    // rerun: continues, ends byte-identical to the uninterrupted run
    let out = ok(&args.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    assert!(out.contains("already there"), "{out}");
    assert_eq!(hashes(&cut), hashes(&whole));
    // a different run into the same directory is refused
    let other = generate(&teacher, &cut, "1000", shard);
    let (code, e) = fails(&other.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    assert_eq!(code, 2);
    assert!(e.contains("different run"), "{e}");
}

fn small_pairs(tmp: &Path, teacher: &Path, name: &str) -> PathBuf {
    let p = tmp.join(name);
    let args = generate(teacher, &p, "600", "200");
    ok(&args.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    p
}

#[test]
fn missing_or_truncated_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let distill = |pairs: &Path| {
        fails(&[
            "distill",
            "--method",
            "kdm",
            "--pairs",
            s(pairs),
            "--iters",
            "2",
            "--out",
            s(&tmp.path().join("student")),
        ])
    };
    let p = small_pairs(tmp.path(), &teacher, "truncated");
    let shard = p.join("pairs-00001.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let (code, e) = distill(&p);
    assert_eq!(code, 2);
    assert!(
        e.contains("pairs-00001.safetensors") && e.contains("truncated"),
        "{e}"
    );
    let p = small_pairs(tmp.path(), &teacher, "missing");
    std::fs::remove_file(p.join("pairs-00002.safetensors")).unwrap();
    let (code, e) = distill(&p);
    assert_eq!(code, 2);
    assert!(
        e.contains("pairs-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
    let (code, e) = distill(&tmp.path().join("nowhere"));
    assert_eq!(code, 2);
    assert!(e.contains("does not exist"), "{e}");
    assert!(!tmp.path().join("student").exists());
    // method/flag mismatches
    let (code, e) = fails(&[
        "distill",
        "--method",
        "kdm",
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("--pairs"), "{e}");
}

fn check_export(student: &Path, tmp: &Path, name: &str) {
    let graph = tmp.join(format!("{name}_export/model.onnx"));
    ok(&["export", "--model", s(student), "--out", s(&graph)]);
    let bytes = std::fs::read(&graph).unwrap();
    let proto = flashctl_exporters::decode_model(&bytes).unwrap();
    let g = proto.graph.as_ref().unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert!(!ops.contains(&"Loop") && !ops.contains(&"Scan"), "{ops:?}");
    // one graph: the x0 encoder is training-only and absent
    assert!(
        g.initializer
            .iter()
            .all(|i| !i.name.starts_with("encoder_0")),
        "training-only weights exported"
    );
    assert!(g.initializer.iter().any(|i| i.name.starts_with("koopman")));
    let out = ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        &common::parity_runtimes().join(","),
        "--atol",
        "1e-4",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], true, "{out}");
}

#[test]
fn kdm_dense_and_eigen_adversarial_distil_sample_eval_export_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let pairs = small_pairs(tmp.path(), &teacher, "pairs");
    for (name, extra) in [
        ("dense", vec!["--koopman", "dense"]),
        ("eigen_adv", vec!["--koopman", "eigen", "--adversarial"]),
    ] {
        let student = tmp.path().join(name);
        let mut args = vec![
            "distill",
            "--method",
            "kdm",
            "--pairs",
            s(&pairs),
            "--iters",
            "30",
            "--batch",
            "64",
            "--preset",
            "tiny",
            "--out",
            s(&student),
        ];
        args.extend(extra);
        ok(&args);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(student.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["sampler"]["kind"], "one_step");
        assert_eq!(cfg["denoiser"]["type"], "kdm");
        assert_eq!(cfg["distillation"]["method"], "kdm");
        // model.safetensors holds the generator only
        let w = common::load(&student.join("model.safetensors"));
        assert!(w
            .keys()
            .all(|k| !k.starts_with("encoder_0") && !k.starts_with("discriminator")));
        assert!(w.keys().any(|k| k.starts_with("encoder_t")));
        let state = common::load(&student.join("train_state.safetensors"));
        assert!(state.keys().any(|k| k.starts_with("param.encoder_0")));
        assert_eq!(
            state.keys().any(|k| k.starts_with("param.discriminator")),
            name == "eigen_adv"
        );
        // a one-step generator runs one step only
        let (code, e) = fails(&[
            "sample",
            "--model",
            s(&student),
            "--steps",
            "3",
            "--out",
            s(&tmp.path().join("x.safetensors")),
        ]);
        assert_eq!(code, 2);
        assert!(e.contains("exactly 1 step"), "{e}");
        let eval = ok(&[
            "eval",
            "--model",
            s(&student),
            "--dataset",
            "two-moons",
            "--count",
            "200",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&eval).unwrap();
        assert!(v["model"]["metrics"]["swd"].as_f64().unwrap().is_finite());
        check_export(&student, tmp.path(), name);
    }
    // resume continues to the same weights as an uninterrupted run
    let a = tmp.path().join("resume_a");
    let b = tmp.path().join("resume_b");
    let base = |out: &Path, iters: &str| {
        vec![
            "distill".to_string(),
            "--method".into(),
            "kdm".into(),
            "--pairs".into(),
            s(&pairs).into(),
            "--koopman".into(),
            "eigen".into(),
            "--preset".into(),
            "tiny".into(),
            "--batch".into(),
            "32".into(),
            "--checkpoint-every".into(),
            "5".into(),
            "--iters".into(),
            iters.into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let run = |v: Vec<String>| ok(&v.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    run(base(&a, "10"));
    run(base(&b, "5"));
    let mut r = base(&b, "10");
    r.push("--resume".into());
    run(r);
    assert_eq!(
        hashes(&a)["model.safetensors"],
        hashes(&b)["model.safetensors"]
    );
}

#[test]
fn class_conditional_image_kdm_exports_with_labels() {
    let tmp = tempfile::tempdir().unwrap();
    // a tiny class-conditional image teacher: the diffusers class fixture (v-prediction, 10
    // classes), run as a flashctl teacher
    let teacher = common::fixture("diffusers/unet_class_vpred");
    let pairs = tmp.path().join("pairs");
    ok(&[
        "pairs",
        "generate",
        "--teacher",
        s(&teacher),
        "--count",
        "48",
        "--steps",
        "4",
        "--shard-size",
        "16",
        "--out",
        s(&pairs),
    ]);
    let shard = common::load(&pairs.join("pairs-00000.safetensors"));
    assert_eq!(shard["class_labels"].dims(), [16]);
    let student = tmp.path().join("student");
    ok(&[
        "distill",
        "--method",
        "kdm",
        "--pairs",
        s(&pairs),
        "--iters",
        "3",
        "--batch",
        "4",
        "--preset",
        "tiny",
        "--koopman",
        "eigen",
        "--recon",
        "pseudo-huber",
        "--out",
        s(&student),
    ]);
    let w = common::load(&student.join("model.safetensors"));
    assert!(
        w.contains_key("control.weight"),
        "class control term missing"
    );
    check_export(&student, tmp.path(), "export");
    // the one-step graph's shape, reviewed as a readable diff when an export changes
    let bytes = std::fs::read(tmp.path().join("export_export/model.onnx")).unwrap();
    let summary = flashctl_exporters::summarize(&flashctl_exporters::decode_model(&bytes).unwrap());
    insta::assert_json_snapshot!("kdm_class_eigen_tiny_unet_summary", summary);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("export_export/manifest.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["noise", "class_labels"]);
}

/// `validate --target` allow-lists and `--allow-missing` on a KDM export (issue 6, parts 1 and 6).
#[test]
fn validate_target_allow_lists_and_allow_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let pairs = small_pairs(tmp.path(), &teacher, "pairs");
    let student = tmp.path().join("student");
    ok(&[
        "distill",
        "--method",
        "kdm",
        "--pairs",
        s(&pairs),
        "--iters",
        "2",
        "--preset",
        "tiny",
        "--out",
        s(&student),
    ]);
    let graph = tmp.path().join("export/model.onnx");
    ok(&["export", "--model", s(&student), "--out", s(&graph)]);
    ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--target",
        "tensorrt10",
    ]);
    // per-output tolerances: recorded in the report; an unknown output name is bad input
    let out = ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--atol",
        "1e-5",
        "--atol",
        "image=2e-4",
        "--rtol",
        "image=1e-3",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["tolerance"]["atol"], 1e-5);
    assert_eq!(r["tolerance_overrides"]["image"]["atol"], 2e-4);
    assert_eq!(r["tolerance_overrides"]["image"]["rtol"], 1e-3);
    let (code, e) = fails(&["validate", s(&graph), "--atol", "nosuch=1"]);
    assert_eq!(code, 2);
    assert!(e.contains("`nosuch`"), "{e}");
    let (code, _) = fails(&["validate", s(&graph), "--atol", "image=-1"]);
    assert_eq!(code, 2);
    // a reference whose input has the wrong shape or dtype is bad input, named, before any run
    let reference = common::load(&graph.with_file_name("reference.safetensors"));
    for (what, noise) in [
        (
            "shape",
            candle_core::Tensor::zeros((4, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
        ),
        (
            "F64",
            reference["noise"]
                .to_dtype(candle_core::DType::F64)
                .unwrap(),
        ),
    ] {
        let mut bad = reference.clone();
        bad.insert("noise".into(), noise);
        let path = tmp.path().join(format!("bad_{what}.safetensors"));
        candle_core::safetensors::save(&bad, &path).unwrap();
        let (code, e) = fails(&["validate", s(&graph), "--reference", s(&path)]);
        assert_eq!(code, 2, "{e}");
        assert!(e.contains("`noise`") && e.contains(what), "{e}");
    }
    // the ORT mobile package stops at opset 15; flashctl exports opset 17
    let (code, e) = fails(&["validate", s(&graph), "--target", "ort-mobile"]);
    assert_eq!(code, 2);
    assert!(e.contains("opset 17") && e.contains("ort-mobile"), "{e}");
    let (code, e) = fails(&["validate", s(&graph), "--target", "coreml"]);
    assert_eq!(code, 2);
    assert!(e.contains("unknown --target"), "{e}");
    // ort-cuda is not built into this binary (cargo feature): unavailable, named with its reason
    let (code, e) = fails(&["validate", s(&graph), "--runtimes", "tract,ort-cuda"]);
    assert_eq!(code, 2);
    assert!(e.contains("unavailable"), "{e}");
    let out = ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract,ort-cuda",
        "--allow-missing",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["passed"], true);
    assert_eq!(r["runtimes"][1]["status"], "unavailable");
    assert!(r["runtimes"][1]["reason"].as_str().unwrap().len() > 5);
    // allowing missing runtimes never turns "nothing ran" into a pass
    let o = common::flashctl(&[
        "validate",
        s(&graph),
        "--runtimes",
        "ort-cuda",
        "--allow-missing",
    ]);
    assert_eq!(o.status.code(), Some(1));
}
