//! Eager backend: candle tensors, differentiable, used for training and reference sampling.

use crate::error::{shape_err, GraphError, Result};
use crate::ir::Dim;
use crate::ops::{resolve_reshape, BinaryOp, Init, Ops, UnaryOp};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

/// Parameters come from a candle `VarBuilder`: a `VarMap` when training (missing parameters are
/// created with their init), or loaded tensors when sampling or exporting.
pub struct EagerOps {
    vb: VarBuilder<'static>,
    device: Device,
}

impl EagerOps {
    pub fn new(vb: VarBuilder<'static>) -> Self {
        let device = vb.device().clone();
        Self { vb, device }
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl Ops for EagerOps {
    type T = Tensor;

    fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.vb
            .get_with_hints(shape, name, init)
            .map_err(|e| GraphError::Param {
                name: name.to_string(),
                msg: e.to_string(),
            })
    }

    fn constant(&self, values: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(values, shape, &self.device)?)
    }

    fn shape(&self, x: &Tensor) -> Vec<Dim> {
        x.dims().iter().map(|&d| Dim::Known(d)).collect()
    }

    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        let y = x.conv2d(w, padding, stride, 1, 1)?;
        match b {
            Some(b) => Ok(y.broadcast_add(&b.reshape((1, (), 1, 1))?)?),
            None => Ok(y),
        }
    }

    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let y = x.broadcast_matmul(&w.t()?)?;
        match b {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(a.contiguous()?.broadcast_matmul(&b.contiguous()?)?)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match op {
            BinaryOp::Add => a.broadcast_add(b)?,
            BinaryOp::Sub => a.broadcast_sub(b)?,
            BinaryOp::Mul => a.broadcast_mul(b)?,
            BinaryOp::Div => a.broadcast_div(b)?,
        })
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        Ok(match op {
            UnaryOp::Sigmoid => candle_nn::ops::sigmoid(x)?,
            UnaryOp::Sin => x.sin()?,
            UnaryOp::Cos => x.cos()?,
            UnaryOp::Exp => x.exp()?,
            UnaryOp::Sqrt => x.sqrt()?,
            UnaryOp::Neg => x.neg()?,
        })
    }

    fn affine(&self, x: &Tensor, mul: f32, add: f32) -> Result<Tensor> {
        Ok(x.affine(mul as f64, add as f64)?)
    }

    fn softmax_last_dim(&self, x: &Tensor) -> Result<Tensor> {
        // max-subtracted softmax built from differentiable ops (candle's fused kernel has no backward)
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max.detach())?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
    }

    fn mean_keepdim(&self, x: &Tensor, axis: usize) -> Result<Tensor> {
        Ok(x.mean_keepdim(axis)?)
    }

    fn reshape(&self, x: &Tensor, spec: &[i64]) -> Result<Tensor> {
        let dims = resolve_reshape(x.dims(), spec)?;
        Ok(x.reshape(dims)?)
    }

    fn transpose(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        if perm.len() != x.rank() {
            return shape_err("transpose", format!("perm {perm:?} for rank {}", x.rank()));
        }
        Ok(x.permute(perm)?.contiguous()?)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        Ok(Tensor::cat(xs, axis)?)
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let ids = match ids.dtype() {
            DType::U32 | DType::I64 => ids.clone(),
            _ => ids.to_dtype(DType::I64)?,
        };
        Ok(table.index_select(&ids, 0)?)
    }

    fn clamp(&self, x: &Tensor, min: f32, max: f32) -> Result<Tensor> {
        Ok(x.clamp(min, max)?)
    }

    fn pad2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let r = x.rank();
        if r < 2 {
            return shape_err("pad2d", "needs rank >= 2");
        }
        let x = x.pad_with_zeros(r - 2, pads[0], pads[1])?;
        Ok(x.pad_with_zeros(r - 1, pads[2], pads[3])?)
    }
}
