//! The traceable op layer.
//!
//! A network is written once against [`Ops`]. Two backends implement it:
//! - [`EagerOps`]: candle tensors, differentiable; used for training and reference sampling.
//! - [`TraceOps`]: records every op into the typed graph IR ([`ir::Graph`]) with parameters as
//!   named initializers, so an exporter can lower exactly the function that was trained.
//!
//! Nothing here knows about ONNX Runtime or any other runtime.

/// The primitive `Ops` methods of a wrapper that holds `inner: &O`: each calls the same method of
/// `inner` and passes the result through `self.$wrap(..)` (identity for [`crate::Prefixed`], a
/// tap for [`crate::Recording`]). Sources (`param`, `constant`, `shape`) and `scoped` are the
/// wrapper's own.
macro_rules! delegate_primitives {
    ($wrap:ident) => {
        fn conv2d(
            &self,
            x: &Self::T,
            w: &Self::T,
            b: Option<&Self::T>,
            stride: usize,
            padding: usize,
        ) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.conv2d(x, w, b, stride, padding))
        }
        fn linear(
            &self,
            x: &Self::T,
            w: &Self::T,
            b: Option<&Self::T>,
        ) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.linear(x, w, b))
        }
        fn matmul(&self, a: &Self::T, b: &Self::T) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.matmul(a, b))
        }
        fn binary(
            &self,
            op: $crate::ops::BinaryOp,
            a: &Self::T,
            b: &Self::T,
        ) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.binary(op, a, b))
        }
        fn unary(&self, op: $crate::ops::UnaryOp, x: &Self::T) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.unary(op, x))
        }
        fn affine(&self, x: &Self::T, mul: f32, add: f32) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.affine(x, mul, add))
        }
        fn softmax_last_dim(&self, x: &Self::T) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.softmax_last_dim(x))
        }
        fn mean_keepdim(&self, x: &Self::T, axis: usize) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.mean_keepdim(x, axis))
        }
        fn reshape(&self, x: &Self::T, spec: &[i64]) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.reshape(x, spec))
        }
        fn transpose(&self, x: &Self::T, perm: &[usize]) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.transpose(x, perm))
        }
        fn concat(&self, xs: &[&Self::T], axis: usize) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.concat(xs, axis))
        }
        fn embedding(&self, table: &Self::T, ids: &Self::T) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.embedding(table, ids))
        }
        fn clamp(&self, x: &Self::T, min: f32, max: f32) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.clamp(x, min, max))
        }
        fn pad2d(&self, x: &Self::T, pads: [usize; 4]) -> $crate::error::Result<Self::T> {
            self.$wrap(self.inner.pad2d(x, pads))
        }
    };
}

pub mod cpu_kernels;
pub mod eager;
pub mod error;
pub mod fp16;
pub mod ir;
pub mod lowering;
pub mod ops;
pub mod prefixed;
pub mod recording;
pub(crate) mod simd;
pub mod trace;

pub use eager::{ConvImpl, EagerOps, Kernels};
pub use error::{GraphError, Result};
pub use ir::{DType, Dim, Graph, GraphSummary, Initializer, Node, Op, TensorData, ValueInfo};
pub use ops::{BinaryOp, Ops, UnaryOp};
pub use prefixed::Prefixed;
pub use recording::Recording;
pub use trace::{TraceOps, Traced};
