//! The traceable op layer.
//!
//! A network is written once against [`Ops`]. Two backends implement it:
//! - [`EagerOps`]: candle tensors, differentiable; used for training and reference sampling.
//! - [`TraceOps`]: records every op into the typed graph IR ([`ir::Graph`]) with parameters as
//!   named initializers, so an exporter can lower exactly the function that was trained.
//!
//! Nothing here knows about ONNX Runtime or any other runtime.

pub mod eager;
pub mod error;
pub mod fp16;
pub mod ir;
pub mod ops;
pub mod prefixed;
pub mod recording;
pub mod trace;

pub use eager::EagerOps;
pub use error::{GraphError, Result};
pub use ir::{DType, Dim, Graph, GraphSummary, Initializer, Node, Op, TensorData, ValueInfo};
pub use ops::{BinaryOp, Ops, UnaryOp};
pub use prefixed::Prefixed;
pub use recording::Recording;
pub use trace::{TraceOps, Traced};
