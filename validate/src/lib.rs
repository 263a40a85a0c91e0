//! Runtimes behind one trait, parity statistics and reports.
//!
//! tract is always built. ONNX Runtime is loaded dynamically from `libonnxruntime.so` (pip's
//! `onnxruntime` wheel), found through `ORT_DYLIB_PATH`; a runtime that cannot load is reported
//! as unavailable with its reason, never as a pass.

pub mod engines;
pub mod error;
pub mod ort_runtime;
pub mod parity;
pub mod runtime;
pub mod tensor;
pub mod tract_runtime;

pub use error::{Result, ValidateError};
pub use ort_runtime::{find_ort_library, OrtRuntime};
pub use parity::{compare, ParityStats, Tolerance};
pub use runtime::{percentile, runtime_by_name, time_ms, Runtime, RUNTIME_NAMES};
pub use tensor::{HostData, HostTensor};
pub use tract_runtime::TractRuntime;
