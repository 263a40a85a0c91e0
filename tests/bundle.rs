//! `flashctl build`, `bundle verify` and `bench` end to end on the fixture models.

mod common;

use common::{fails, flashctl, ok, s};
use std::path::Path;

fn model(name: &str) -> std::path::PathBuf {
    common::root().join("fixtures/models").join(name)
}

fn build(target: &str, out: &Path, cache: &Path) -> serde_json::Value {
    let json = ok(&[
        "build",
        "--model",
        s(&model("mlp_if2")),
        "--target",
        target,
        "--out",
        s(out),
        "--cache-dir",
        s(cache),
        "--runs",
        "3",
        "--json",
    ]);
    serde_json::from_str(&json).unwrap()
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn tract_bundle_builds_verifies_caches_and_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let bundle = tmp.path().join("bundle");
    let m = build("tract", &bundle, &cache);
    let e = &m["engines"][0];
    assert_eq!(e["cache"], "miss");
    assert_eq!(e["status"], "pass", "{m:#}");
    assert!(e["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    for f in [
        "README.md",
        "onnx/model.onnx",
        "onnx/reference.safetensors",
        "engines/tract/model.nnef.tar",
    ] {
        assert!(m["files"][f].is_string(), "{f} hashed: {m:#}");
        assert!(bundle.join(f).is_file());
    }
    assert_eq!(m["inputs"][0]["name"], "noise");
    assert!(m["postprocessing"].as_str().unwrap().contains("points"));
    ok(&["bundle", "verify", s(&bundle)]);
    // same graph, runtime, device, flags: the cached engine is used
    let again = build("tract", &tmp.path().join("bundle2"), &cache);
    assert_eq!(again["engines"][0]["cache"], "hit");
    // a corrupted cache entry is rebuilt, never used
    let entry = cache.join(&again["engines"][0]["cache_key"].as_str().unwrap()[..16]);
    flip_byte(&entry.join("model.nnef.tar"));
    let rebuilt = build("tract", &tmp.path().join("bundle3"), &cache);
    let status = rebuilt["engines"][0]["cache"].as_str().unwrap();
    assert!(status.starts_with("stale: model.nnef.tar"), "{status}");
    // a foreign entry (another runtime version under this key's name) is rebuilt too
    let ej = entry.join("entry.json");
    let text = std::fs::read_to_string(&ej).unwrap();
    std::fs::write(&ej, text.replace("tract 0.23", "tract 0.22")).unwrap();
    let foreign = build("tract", &tmp.path().join("bundle4"), &cache);
    let status = foreign["engines"][0]["cache"].as_str().unwrap();
    assert!(
        status.starts_with("stale: entry built for another"),
        "{status}"
    );
    // a changed byte in the engine fails verify, naming the file
    flip_byte(&bundle.join("engines/tract/model.nnef.tar"));
    let o = flashctl(&["bundle", "verify", s(&bundle)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("engines/tract/model.nnef.tar"), "{err}");
    // an unknown target and an unavailable provider are one-line errors, exit 2
    let (code, _) = fails(&[
        "build",
        "--model",
        s(&model("mlp_if2")),
        "--target",
        "coreml",
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert_eq!(code, 2);
    let (code, err) = fails(&[
        "build",
        "--model",
        s(&model("mlp_if2")),
        "--target",
        "ort-cuda",
        "--out",
        s(&tmp.path().join("y")),
        "--cache-dir",
        s(&cache),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!tmp.path().join("y").exists(), "nothing written on failure");
}

#[test]
fn ort_cpu_bundle_builds_and_verifies() {
    if !common::ort_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b");
    let m = build("ort-cpu", &bundle, &tmp.path().join("cache"));
    assert_eq!(m["engines"][0]["status"], "pass", "{m:#}");
    assert!(m["engines"][0]["runtime"]
        .as_str()
        .unwrap()
        .starts_with("onnxruntime 1."));
    assert!(bundle.join("engines/ort-cpu/model.ort.onnx").is_file());
    let out = ok(&["bundle", "verify", s(&bundle), "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
}

#[test]
fn bench_reports_speedup_unroll_overhead_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let json = ok(&[
        "bench",
        "--model",
        s(&model("mlp_if2")),
        "--teacher",
        s(&model("mlp_teacher")),
        "--teacher-steps",
        "10",
        "--runtime",
        "tract",
        "--batch",
        "1,4",
        "--warmup",
        "1",
        "--runs",
        "3",
        "--out",
        s(&out),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(r["speedup"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["unroll_overhead"].as_f64().unwrap() > 0.0);
    assert_eq!(r["per_batch"].as_array().unwrap().len(), 2);
    assert_eq!(r["student"]["steps"], 2);
    let t = &r["teacher"]["per_batch"][1];
    assert!(t["latency_ms"]["p99"].as_f64().unwrap() >= t["latency_ms"]["p50"].as_f64().unwrap());
    assert!(out.join("latency.png").is_file() && out.join("bench.json").is_file());
    assert_eq!(r["precision"], "fp32");
    // the same student with fp16 graphs, in ONNX Runtime when it is installed
    if common::ort_available() {
        let json = ok(&[
            "bench",
            "--model",
            s(&model("mlp_if2")),
            "--runtime",
            "ort-cpu",
            "--precision",
            "fp16",
            "--batch",
            "2",
            "--runs",
            "2",
            "--out",
            s(&tmp.path().join("bench16")),
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(r["precision"], "fp16");
        assert!(
            r["student"]["per_batch"][0]["latency_ms"]["p50"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
}

/// flashctl's own denoiser call of `mlp_if2` with its inputs renamed as another exporter would
/// name them (and, with `fixed_batch`, a batch axis fixed at that size).
fn foreign_denoiser_call(dir: &Path, fixed_batch: Option<i64>) -> std::path::PathBuf {
    use flashctl_exporters::pb::tensor_shape_proto::dimension::Value;
    let call = dir.join("call/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&model("mlp_if2")),
        "--denoiser-only",
        "--out",
        s(&call),
    ]);
    let mut m = flashctl_exporters::decode_model(&std::fs::read(&call).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let renames = [("x", "sample"), ("t", "timestep")];
    for (from, to) in renames {
        for v in g.input.iter_mut().filter(|v| v.name == from) {
            v.name = to.into();
        }
        for n in g.node.iter_mut() {
            for i in n.input.iter_mut().filter(|i| *i == from) {
                *i = to.into();
            }
        }
    }
    if let Some(b) = fixed_batch {
        g.value_info.clear(); // intermediate shapes still say `batch`
        for v in g.input.iter_mut().chain(g.output.iter_mut()) {
            let Some(flashctl_exporters::pb::type_proto::Value::TensorType(t)) =
                v.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                continue;
            };
            t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(b));
        }
    }
    let other = dir.join("other.onnx");
    std::fs::write(&other, flashctl_exporters::encode_model(&m)).unwrap();
    other
}

#[test]
fn bench_against_times_another_graph_of_the_same_model_interleaved() {
    let tmp = tempfile::tempdir().unwrap();
    let other = foreign_denoiser_call(tmp.path(), None);
    let json = ok(&[
        "bench",
        "--model",
        s(&model("mlp_if2")),
        "--against",
        s(&other),
        "--runtime",
        "tract",
        "--batch",
        "1,4",
        "--warmup",
        "1",
        "--runs",
        "3",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let a = &r["against"];
    assert_eq!(a["compared_with"], "denoiser call", "{a:#}");
    assert_eq!(a["same_function"], true, "{a:#}");
    assert!(a["max_abs_diff"].as_f64().unwrap() < 1e-5, "{a:#}");
    assert_eq!(a["nodes"], a["flashctl_nodes"]);
    let per_batch = a["per_batch"].as_array().unwrap();
    assert_eq!(per_batch.len(), 2);
    assert_eq!(per_batch[1]["batch"], 4);
    assert!(per_batch[1]["ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_against_a_fixed_batch_graph_names_the_batch_it_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let other = foreign_denoiser_call(tmp.path(), Some(1));
    let args = |batch| {
        vec![
            "bench".to_string(),
            "--model".into(),
            s(&model("mlp_if2")).into(),
            "--against".into(),
            s(&other).into(),
            "--batch".into(),
            batch,
            "--runs".into(),
            "2".into(),
        ]
    };
    let a4 = args("4".into());
    let (code, err) = fails(&a4.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("fixed batch of 1") && err.contains("--batch 1"),
        "{err}"
    );
    let a1 = args("1".into());
    ok(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    let missing = tmp.path().join("nope.onnx");
    let (code, err) = fails(&[
        "bench",
        "--model",
        s(&model("mlp_if2")),
        "--against",
        s(&missing),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.onnx"), "{err}");
}
