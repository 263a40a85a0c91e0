//! Eager backend: candle tensors, differentiable, used for training and reference sampling.

use crate::cpu_kernels;
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
    conv: ConvImpl,
    kernels: Kernels,
}

/// Whether group norm, SiLU and softmax run as the fused CPU kernels of
/// [`crate::cpu_kernels`] (the CPU default) or as the composites of [`Ops`] (every other
/// device: a fused replacement there waits for a lent device to measure it).
/// `FLASHCTL_EAGER_KERNELS=composite` forces the composites on the CPU too (the kernels have no
/// GPU implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Fused,
    Composite,
}

impl Kernels {
    pub fn for_device(device: &Device) -> Kernels {
        match std::env::var("FLASHCTL_EAGER_KERNELS").as_deref() {
            Ok("composite") => Kernels::Composite,
            _ if device.is_cpu() => Kernels::Fused,
            _ => Kernels::Composite,
        }
    }
}

/// How the eager backend convolves. On the CPU, the im2col kernel of [`crate::cpu_kernels`] +
/// one matmul (candle's CPU conv2d backward is a naive conv_transpose2d, see
/// [`conv2d_im2col`]); on a GPU, candle's own conv2d (one im2col kernel + one GEMM).
/// `FLASHCTL_EAGER_CONV=im2col|native` overrides the choice, to profile both on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvImpl {
    Im2col,
    Native,
}

impl ConvImpl {
    pub fn for_device(device: &Device) -> ConvImpl {
        match std::env::var("FLASHCTL_EAGER_CONV").as_deref() {
            Ok("im2col") => ConvImpl::Im2col,
            Ok("native") => ConvImpl::Native,
            _ if device.is_cpu() => ConvImpl::Im2col,
            _ => ConvImpl::Native,
        }
    }
}

fn kernel_err(op: &'static str, e: candle_core::Error) -> GraphError {
    GraphError::Shape {
        op,
        msg: e.to_string(),
    }
}

impl EagerOps {
    pub fn new(vb: VarBuilder<'static>) -> Self {
        let device = vb.device().clone();
        let conv = ConvImpl::for_device(&device);
        let kernels = Kernels::for_device(&device);
        Self {
            vb,
            device,
            conv,
            kernels,
        }
    }
    /// As [`EagerOps::new`] with an explicit convolution implementation.
    pub fn with_conv(vb: VarBuilder<'static>, conv: ConvImpl) -> Self {
        let mut ops = Self::new(vb);
        ops.conv = conv;
        ops
    }
    /// As [`EagerOps::new`] with an explicit choice of fused kernels or composites.
    pub fn with_kernels(vb: VarBuilder<'static>, kernels: Kernels) -> Self {
        let mut ops = Self::new(vb);
        ops.kernels = kernels;
        ops
    }
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }
    fn fused(&self, x: &Tensor) -> bool {
        self.kernels == Kernels::Fused && x.device().is_cpu() && x.dtype() == DType::F32
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn conv_impl(&self) -> ConvImpl {
        self.conv
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
        let y = match self.conv {
            ConvImpl::Im2col if self.fused(x) => return conv2d_im2col(x, w, b, stride, padding),
            _ => x.conv2d(w, padding, stride, 1, 1)?,
        };
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
            UnaryOp::Erf => x.erf()?,
        })
    }

    fn affine(&self, x: &Tensor, mul: f32, add: f32) -> Result<Tensor> {
        Ok(x.affine(mul as f64, add as f64)?)
    }

    fn softmax_last_dim(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused(x) {
            return x
                .contiguous()?
                .apply_op1(cpu_kernels::SoftmaxLastDim)
                .map_err(|e| kernel_err("softmax", e));
        }
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
        // Gather on axis 0 for ids of any shape (as ONNX's): [..ids, dim]
        if ids.rank() == 1 {
            return Ok(table.index_select(&ids, 0)?);
        }
        let mut shape = ids.dims().to_vec();
        shape.push(table.dim(1)?);
        Ok(table.index_select(&ids.flatten_all()?, 0)?.reshape(shape)?)
    }

    fn clamp(&self, x: &Tensor, min: f32, max: f32) -> Result<Tensor> {
        Ok(x.clamp(min, max)?)
    }

    fn silu(&self, x: &Tensor) -> Result<Tensor> {
        if self.fused(x) {
            return x
                .contiguous()?
                .apply_op1(cpu_kernels::Silu)
                .map_err(|e| kernel_err("silu", e));
        }
        crate::ops::silu_composite(self, x)
    }

    fn group_norm(
        &self,
        x: &Tensor,
        groups: usize,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        if self.fused(x) {
            return fused_group_norm(x, groups, weight, bias, eps, false);
        }
        crate::ops::group_norm_composite(self, x, groups, weight, bias, eps)
    }

    fn group_norm_silu(
        &self,
        scope: &str,
        x: &Tensor,
        groups: usize,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        if self.fused(x) {
            return fused_group_norm(x, groups, weight, bias, eps, true);
        }
        crate::ops::group_norm_silu_composite(self, scope, x, groups, weight, bias, eps)
    }

    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
        if self.fused(q) {
            return q
                .contiguous()?
                .apply_op3(
                    &k.contiguous()?,
                    &v.contiguous()?,
                    cpu_kernels::Attention { scale },
                )
                .map_err(|e| kernel_err("attention", e));
        }
        crate::ops::attention_composite(self, q, k, v, scale)
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

/// [`cpu_kernels::Conv2d`]: per sample, im2col into scratch + one GEMM, forward and backward.
/// candle's own CPU conv2d backward goes through a naive conv_transpose2d that made a small
/// UNet's training step ~9 s at batch 32 (measured); the same im2col built from `narrow` + `cat`
/// cost k*k copies forward, k*k zero-padded copies backward and a batch-sized patch tensor.
fn conv2d_im2col(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let bias = match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(
            w.dims().first().copied().unwrap_or(0),
            w.dtype(),
            w.device(),
        )?,
    };
    x.contiguous()?
        .apply_op3(
            &w.contiguous()?,
            &bias,
            cpu_kernels::Conv2d {
                stride,
                pad: padding,
            },
        )
        .map_err(|e| kernel_err("conv2d", e))
}

/// [`cpu_kernels::GroupNorm`] (with SiLU when `silu`), checked like the composite.
fn fused_group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    let channels = x.dims().get(1).copied().unwrap_or(0);
    if x.rank() < 2 || groups == 0 || channels % groups != 0 {
        return shape_err(
            "group_norm",
            format!("{channels} channels not divisible into {groups} groups"),
        );
    }
    x.contiguous()?
        .apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            cpu_kernels::GroupNorm { groups, eps, silu },
        )
        .map_err(|e| kernel_err("group_norm", e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn im2col_conv_matches_candle_conv() {
        let dev = Device::Cpu;
        for (c, o, k, h, w, stride, pad) in [
            (3, 5, 3, 8, 8, 1, 1),
            (4, 6, 3, 9, 7, 2, 1),
            (4, 6, 3, 8, 8, 2, 0),
            (2, 3, 1, 5, 5, 1, 0),
            (3, 4, 3, 7, 7, 1, 0),
            (2, 2, 5, 11, 10, 2, 2),
        ] {
            let x = Tensor::randn(0f32, 1., (2, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap();
            let want = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            let got = conv2d_im2col(&x, &wt, None, stride, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = max_diff(&got, &want);
            assert!(err < 1e-4, "{c} {o} {k} {h}x{w} s{stride} p{pad}: {err}");
        }
    }

    /// Both convolution implementations give the same values and the same gradients (the GPU
    /// default, `Native`, is otherwise only exercised on a device).
    #[test]
    fn native_and_im2col_conv_agree_in_value_and_gradient() {
        let dev = Device::Cpu;
        for (stride, pad) in [(1, 1), (2, 1)] {
            let x = candle_core::Var::randn(0f32, 1., (2, 3, 8, 8), &dev).unwrap();
            let w = candle_core::Var::randn(0f32, 1., (4, 3, 3, 3), &dev).unwrap();
            let run = |conv| {
                let ops = EagerOps::with_conv(VarBuilder::zeros(DType::F32, &dev), conv);
                let y = ops
                    .conv2d(x.as_tensor(), w.as_tensor(), None, stride, pad)
                    .unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                (
                    y,
                    g.get(x.as_tensor()).unwrap().clone(),
                    g.get(w.as_tensor()).unwrap().clone(),
                )
            };
            let (y1, gx1, gw1) = run(ConvImpl::Im2col);
            let (y2, gx2, gw2) = run(ConvImpl::Native);
            assert!(max_diff(&y1, &y2) < 1e-4);
            assert!(max_diff(&gx1, &gx2) < 1e-3, "dx, stride {stride}");
            assert!(max_diff(&gw1, &gw2) < 1e-3, "dw, stride {stride}");
        }
    }
}
