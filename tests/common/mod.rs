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
