//! `Recording`: the same backend, keeping every primitive's output in call order.
//!
//! The network is written once, so a traced run and an eager run of the same model make the same
//! primitive calls in the same order (composites have one shared body). Zipping the two records
//! pairs every traced value name with the eager tensor it stands for; `validate --bisect` uses that
//! to find the first graph node whose output leaves the eager path.

use crate::error::Result;
use crate::ir::Dim;
use crate::ops::{BinaryOp, Init, Ops, UnaryOp};
use std::cell::RefCell;

pub struct Recording<'a, O: Ops> {
    inner: &'a O,
    taps: RefCell<Vec<O::T>>,
}

impl<'a, O: Ops> Recording<'a, O> {
    pub fn new(inner: &'a O) -> Self {
        Self {
            inner,
            taps: RefCell::new(vec![]),
        }
    }

    /// Every primitive output so far, in call order.
    pub fn into_taps(self) -> Vec<O::T> {
        self.taps.into_inner()
    }

    fn tap(&self, r: Result<O::T>) -> Result<O::T> {
        if let Ok(v) = &r {
            self.taps.borrow_mut().push(v.clone());
        }
        r
    }
}

impl<O: Ops> Ops for Recording<'_, O> {
    type T = O::T;

    // sources are not recorded: they are initializers, not node outputs
    fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<O::T> {
        self.inner.param(name, shape, init)
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
        self.tap(self.inner.conv2d(x, w, b, stride, padding))
    }
    fn linear(&self, x: &O::T, w: &O::T, b: Option<&O::T>) -> Result<O::T> {
        self.tap(self.inner.linear(x, w, b))
    }
    fn matmul(&self, a: &O::T, b: &O::T) -> Result<O::T> {
        self.tap(self.inner.matmul(a, b))
    }
    fn binary(&self, op: BinaryOp, a: &O::T, b: &O::T) -> Result<O::T> {
        self.tap(self.inner.binary(op, a, b))
    }
    fn unary(&self, op: UnaryOp, x: &O::T) -> Result<O::T> {
        self.tap(self.inner.unary(op, x))
    }
    fn affine(&self, x: &O::T, mul: f32, add: f32) -> Result<O::T> {
        self.tap(self.inner.affine(x, mul, add))
    }
    fn softmax_last_dim(&self, x: &O::T) -> Result<O::T> {
        self.tap(self.inner.softmax_last_dim(x))
    }
    fn mean_keepdim(&self, x: &O::T, axis: usize) -> Result<O::T> {
        self.tap(self.inner.mean_keepdim(x, axis))
    }
    fn reshape(&self, x: &O::T, spec: &[i64]) -> Result<O::T> {
        self.tap(self.inner.reshape(x, spec))
    }
    fn transpose(&self, x: &O::T, perm: &[usize]) -> Result<O::T> {
        self.tap(self.inner.transpose(x, perm))
    }
    fn concat(&self, xs: &[&O::T], axis: usize) -> Result<O::T> {
        self.tap(self.inner.concat(xs, axis))
    }
    fn embedding(&self, table: &O::T, ids: &O::T) -> Result<O::T> {
        self.tap(self.inner.embedding(table, ids))
    }
    fn clamp(&self, x: &O::T, min: f32, max: f32) -> Result<O::T> {
        self.tap(self.inner.clamp(x, min, max))
    }
    fn pad2d(&self, x: &O::T, pads: [usize; 4]) -> Result<O::T> {
        self.tap(self.inner.pad2d(x, pads))
    }
    fn scoped<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.inner.scoped(name, f)
    }
}
