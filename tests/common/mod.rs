#![allow(dead_code)]
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

pub fn load(path: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

pub fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a-b| / max |b|
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let (a, b) = (vec(a), vec(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// ONNX Runtime must be present when the README test command runs (it installs it); set
/// FLASHCTL_REQUIRE_ORT=0 to run the rest of the suite without it.
pub fn ort_available() -> bool {
    let found = flashctl_validate::find_ort_library().is_ok();
    if !found && std::env::var("FLASHCTL_REQUIRE_ORT").as_deref() != Ok("0") {
        panic!("libonnxruntime not found: run the README test command (scripts/test.sh) or set ORT_DYLIB_PATH");
    }
    found
}

/// The runtimes every parity test checks: tract always, ONNX Runtime CPU when installed.
pub fn parity_runtimes() -> Vec<&'static str> {
    let mut rts = vec!["tract"];
    if ort_available() {
        rts.push("ort-cpu");
    }
    rts
}

/// Lower a traced graph to ONNX bytes (structure-checked).
pub fn onnx_bytes(g: &flashctl_graphs::Graph) -> Vec<u8> {
    let proto = flashctl_exporters::to_model_proto(g, &Default::default());
    flashctl_exporters::check::check_structure(&proto).unwrap();
    flashctl_exporters::encode_model(&proto)
}

/// Run ONNX bytes in `runtime` and return the first output as f32.
pub fn run_first_output(
    runtime: &str,
    onnx: &[u8],
    inputs: &[flashctl_validate::HostTensor],
) -> Vec<f32> {
    let mut rt = flashctl_validate::runtime_by_name(runtime).unwrap();
    rt.prepare(onnx, inputs).unwrap();
    rt.run(inputs).unwrap()[0]
        .values_f64()
        .iter()
        .map(|&v| v as f32)
        .collect()
}

// ---- running the CLI ----

pub fn flashctl(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashctl"))
        .args(args)
        .output()
        .unwrap();
    if std::env::var("FLASHCTL_TEST_VERBOSE").is_ok() {
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn ok(args: &[&str]) -> String {
    let o = flashctl(args);
    assert!(
        o.status.success(),
        "flashctl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Exit code and the stderr of a command that must fail with a one-line error.
pub fn fails(args: &[&str]) -> (i32, String) {
    let o = flashctl(args);
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!o.status.success(), "flashctl {args:?} should fail");
    assert_eq!(err.lines().count(), 1, "error must be one line, got: {err}");
    assert!(err.starts_with("error: "), "{err}");
    (o.status.code().unwrap(), err)
}

pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A two-moons MLP teacher trained for 60 iterations (seconds).
pub fn tiny_teacher(dir: &std::path::Path) -> PathBuf {
    tiny_teacher_at(dir, "teacher", "60")
}

/// A tiny two-moons MLP teacher in `dir/name`, trained for `iters` iterations.
pub fn tiny_teacher_at(dir: &std::path::Path, name: &str, iters: &str) -> PathBuf {
    let t = dir.join(name);
    ok(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--preset",
        "tiny",
        "--iters",
        iters,
        "--out",
        s(&t),
    ]);
    t
}
