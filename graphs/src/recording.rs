//! `Recording`: the same backend, keeping every primitive's output in call order.
//!
//! The network is written once, so a traced run and an eager run of the same model make the same
//! primitive calls in the same order (composites have one shared body). Zipping the two records
//! pairs every traced value name with the eager tensor it stands for; `validate --bisect` uses that
//! to find the first graph node whose output leaves the eager path.

use crate::error::Result;
use crate::ir::Dim;
use crate::ops::{Init, Ops};
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
    delegate_primitives!(tap);
    fn scoped<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        self.inner.scoped(name, f)
    }
}
