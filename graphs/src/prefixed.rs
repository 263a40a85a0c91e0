//! `Prefixed`: the same backend with every parameter name under `prefix.` and every node under
//! the scope `prefix` (with [`Prefixed::run`]), so one network definition can appear several times in a model (the KDM
//! generator holds two encoders and a decoder built from the same UNet code).

use crate::error::Result;
use crate::ir::Dim;
use crate::ops::{BinaryOp, Init, Ops, UnaryOp};

pub struct Prefixed<'a, O: Ops> {
    inner: &'a O,
    prefix: String,
}

impl<'a, O: Ops> Prefixed<'a, O> {
    pub fn new(inner: &'a O, prefix: &str) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
        }
    }

    /// Run `f` with parameters under `prefix.` and its nodes in the scope `prefix`.
    pub fn run<R>(inner: &'a O, prefix: &str, f: impl FnOnce(&Prefixed<'a, O>) -> R) -> R {
        let p = Prefixed::new(inner, prefix);
        inner.scoped(prefix, || f(&p))
    }
}

impl<O: Ops> Ops for Prefixed<'_, O> {
    type T = O::T;

    fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<O::T> {
        self.inner
            .param(&format!("{}.{name}", self.prefix), shape, init)
    }
    fn constant(&self, values: &[f32], shape: &[usize]) -> Result<O::T> {
        self.inner.constant(values, shape)
    }
    fn shape(&self, x: &O::T) -> Vec<Dim> {
        self.inner.shape(x)
    }
    fn conv2d(
        &self,
        x: &O::T,
        w: &O::T,
        b: Option<&O::T>,
        stride: usize,
        padding: usize,
    ) -> Result<O::T> {
        self.inner.conv2d(x, w, b, stride, padding)
    }
    fn linear(&self, x: &O::T, w: &O::T, b: Option<&O::T>) -> Result<O::T> {
        self.inner.linear(x, w, b)
    }
    fn matmul(&self, a: &O::T, b: &O::T) -> Result<O::T> {
        self.inner.matmul(a, b)
    }
    fn binary(&self, op: BinaryOp, a: &O::T, b: &O::T) -> Result<O::T> {
        self.inner.binary(op, a, b)
    }
    fn unary(&self, op: UnaryOp, x: &O::T) -> Result<O::T> {
        self.inner.unary(op, x)
    }
    fn affine(&self, x: &O::T, mul: f32, add: f32) -> Result<O::T> {
        self.inner.affine(x, mul, add)
    }
    fn softmax_last_dim(&self, x: &O::T) -> Result<O::T> {
        self.inner.softmax_last_dim(x)
    }
    fn mean_keepdim(&self, x: &O::T, axis: usize) -> Result<O::T> {
        self.inner.mean_keepdim(x, axis)
    }
    fn reshape(&self, x: &O::T, spec: &[i64]) -> Result<O::T> {
        self.inner.reshape(x, spec)
    }
    fn transpose(&self, x: &O::T, perm: &[usize]) -> Result<O::T> {
        self.inner.transpose(x, perm)
    }
    fn concat(&self, xs: &[&O::T], axis: usize) -> Result<O::T> {
        self.inner.concat(xs, axis)
    }
    fn embedding(&self, table: &O::T, ids: &O::T) -> Result<O::T> {
        self.inner.embedding(table, ids)
    }
    fn clamp(&self, x: &O::T, min: f32, max: f32) -> Result<O::T> {
        self.inner.clamp(x, min, max)
    }
    fn pad2d(&self, x: &O::T, pads: [usize; 4]) -> Result<O::T> {
        self.inner.pad2d(x, pads)
    }
    fn scoped<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.inner.scoped(name, f)
    }
}
