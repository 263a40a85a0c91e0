//! `Prefixed`: the same backend with every parameter name under `prefix.` and every node under
//! the scope `prefix` (with [`Prefixed::run`]), so one network definition can appear several times in a model (the KDM
//! generator holds two encoders and a decoder built from the same UNet code).

use crate::error::Result;
use crate::ir::Dim;
use crate::ops::{Init, Ops};

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

    fn pass(&self, r: Result<O::T>) -> Result<O::T> {
        r
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
    delegate_primitives!(pass);
    // the composites a backend may fuse go to the inner backend's own version
    fn silu(&self, x: &O::T) -> Result<O::T> {
        self.inner.silu(x)
    }
    fn group_norm(
        &self,
        x: &O::T,
        groups: usize,
        weight: &O::T,
        bias: &O::T,
        eps: f32,
    ) -> Result<O::T> {
        self.inner.group_norm(x, groups, weight, bias, eps)
    }
    fn group_norm_silu(
        &self,
        scope: &str,
        x: &O::T,
        groups: usize,
        weight: &O::T,
        bias: &O::T,
        eps: f32,
    ) -> Result<O::T> {
        self.inner
            .group_norm_silu(scope, x, groups, weight, bias, eps)
    }
    fn attention(&self, q: &O::T, k: &O::T, v: &O::T, scale: f32) -> Result<O::T> {
        self.inner.attention(q, k, v, scale)
    }
    fn scoped<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.inner.scoped(name, f)
    }
}
