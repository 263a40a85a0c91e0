//! Graph IR -> ONNX protobuf, structural checks and graph summaries of ONNX files.
//!
//! Protobuf types are tract-onnx's prost-generated `pb` module, so the project carries one copy
//! of the ONNX schema.

pub mod check;
pub mod error;
pub mod onnx;
pub mod summary;
pub mod targets;

pub use error::{ExportError, Result};
pub use onnx::{decode_model, encode_model, to_model_proto, write_atomic, ExportMeta, OPSET};
pub use summary::{summarize, OnnxSummary};
pub use tract_onnx::pb;
