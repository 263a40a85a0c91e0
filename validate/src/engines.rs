//! Deployable engines built from an ONNX graph: tract's NNEF archive and ONNX Runtime's offline
//! optimised model, each loadable by a [`Runtime`](crate::Runtime) for parity and latency.

use crate::error::{Result, ValidateError};
use tract_onnx::prelude::*;

fn fail(runtime: &str, e: impl std::fmt::Display) -> ValidateError {
    ValidateError::Failed {
        runtime: runtime.into(),
        reason: format!("{e:#}"),
    }
}

/// The graph as a decluttered tract model in an NNEF tar (deterministic: fixed timestamps), which
/// `tract_nnef::nnef().model_for_read` loads without tract-onnx. Optimisation for the edge CPU
/// (kernel selection) happens at load there, as it must: it is specific to that CPU.
pub fn tract_nnef_from_onnx(onnx: &[u8]) -> Result<Vec<u8>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(|e| fail("tract", e))?;
    tract_nnef::nnef()
        .write_to_tar_with_config(&model, vec![], false, true)
        .map_err(|e| fail("tract", e))
}

/// The version of tract that builds and runs NNEF engines.
pub const TRACT_VERSION: &str = "tract 0.23";

/// ONNX Runtime's version, from its build info (`git-branch=rel-X.Y.Z`) or the library's name.
pub fn ort_version() -> Result<String> {
    let lib = crate::find_ort_library().map_err(|reason| ValidateError::Unavailable {
        runtime: "ort".into(),
        reason,
    })?;
    crate::ort_runtime::ensure_environment()?;
    let info = ort::info();
    if let Some(v) = info
        .split([',', ' '])
        .find_map(|p| p.trim().strip_prefix("git-branch=rel-"))
    {
        return Ok(format!("onnxruntime {v}"));
    }
    let name = lib
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    Ok(format!(
        "onnxruntime {}",
        name.trim_start_matches("libonnxruntime.so.")
    ))
}
