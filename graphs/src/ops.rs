//! The op trait every network and sampler is written against.
//!
//! Primitives are the methods without a default body; each backend implements them. Composite
//! ops (silu, group norm, attention, nearest upsampling, the sinusoidal timestep embedding) have
//! default bodies built from primitives, so the eager path and the traced graph run literally the
//! same arithmetic.

use crate::error::{shape_err, Result};
use crate::ir::Dim;
pub use candle_nn::Init;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Sigmoid,
    Sin,
    Cos,
    Exp,
    Sqrt,
    Neg,
    /// the Gauss error function (exact GELU: x/2 (1 + erf(x/sqrt 2)))
    Erf,
}

/// Scope of group-norm statistics (mean, variance, normalisation).
pub const NORM_STATS_SCOPE: &str = "norm_stats";
/// Scope of the sinusoidal timestep embedding.
pub const TIMESTEP_EMBEDDING_SCOPE: &str = "timestep_embedding";
/// Scope of every denoiser (network) call inside a sampler graph.
pub const DENOISER_SCOPE: &str = "denoiser";

pub trait Ops {
    type T: Clone;

    // ---- sources -------------------------------------------------------------------------
    /// A named parameter (created with `init` when training from scratch, else loaded).
    fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Self::T>;
    /// A float32 constant (schedule coefficients, frequency tables).
    fn constant(&self, values: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// The shape of a value; the batch dimension is symbolic when tracing.
    fn shape(&self, x: &Self::T) -> Vec<Dim>;

    // ---- primitives ----------------------------------------------------------------------
    /// 2-D convolution, square kernel, symmetric zero padding. `w`: [out, in, k, k], `b`: [out].
    fn conv2d(
        &self,
        x: &Self::T,
        w: &Self::T,
        b: Option<&Self::T>,
        stride: usize,
        padding: usize,
    ) -> Result<Self::T>;
    /// y = x @ w^T + b over the last axis. `w`: [out, in], `b`: [out].
    fn linear(&self, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
    /// Batched matrix product over the last two axes (leading axes broadcast).
    fn matmul(&self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Elementwise binary op with numpy broadcasting.
    fn binary(&self, op: BinaryOp, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    fn unary(&self, op: UnaryOp, x: &Self::T) -> Result<Self::T>;
    /// x * mul + add with scalar constants.
    fn affine(&self, x: &Self::T, mul: f32, add: f32) -> Result<Self::T>;
    fn softmax_last_dim(&self, x: &Self::T) -> Result<Self::T>;
    /// Mean over one axis, keeping it with size 1.
    fn mean_keepdim(&self, x: &Self::T, axis: usize) -> Result<Self::T>;
    /// ONNX reshape semantics: 0 copies the input dimension at the same index, -1 is inferred.
    fn reshape(&self, x: &Self::T, spec: &[i64]) -> Result<Self::T>;
    fn transpose(&self, x: &Self::T, perm: &[usize]) -> Result<Self::T>;
    fn concat(&self, xs: &[&Self::T], axis: usize) -> Result<Self::T>;
    /// Rows of `table` [N, D] selected by integer `ids` [B] -> [B, D].
    fn embedding(&self, table: &Self::T, ids: &Self::T) -> Result<Self::T>;
    fn clamp(&self, x: &Self::T, min: f32, max: f32) -> Result<Self::T>;
    /// Zero padding of the two last axes: (top, bottom, left, right).
    fn pad2d(&self, x: &Self::T, pads: [usize; 4]) -> Result<Self::T>;

    /// Run `f` inside a named scope; the trace backend uses it for stable node names.
    fn scoped<R>(&self, _name: &str, f: impl FnOnce() -> R) -> R {
        f()
    }

    // ---- composites (shared by every backend) -------------------------------------------
    fn add(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        self.binary(BinaryOp::Add, a, b)
    }
    fn sub(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        self.binary(BinaryOp::Sub, a, b)
    }
    fn mul(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        self.binary(BinaryOp::Mul, a, b)
    }
    fn div(&self, a: &Self::T, b: &Self::T) -> Result<Self::T> {
        self.binary(BinaryOp::Div, a, b)
    }
    fn scale(&self, x: &Self::T, s: f32) -> Result<Self::T> {
        self.affine(x, s, 0.0)
    }

    /// SiLU(x) = x * sigmoid(x) ([`silu_composite`]; fused in the eager CPU backend).
    fn silu(&self, x: &Self::T) -> Result<Self::T> {
        silu_composite(self, x)
    }

    /// GroupNorm over [B, C, ...] with per-channel affine `weight`/`bias` [C], as torch.nn.GroupNorm
    /// ([`group_norm_composite`]; the eager CPU backend runs it as one fused kernel).
    fn group_norm(
        &self,
        x: &Self::T,
        groups: usize,
        weight: &Self::T,
        bias: &Self::T,
        eps: f32,
    ) -> Result<Self::T> {
        group_norm_composite(self, x, groups, weight, bias, eps)
    }

    /// SiLU(GroupNorm(x)), the group norm in the scope `scope` (as `layers::group_norm` puts it):
    /// one op so the eager CPU backend can fuse both; every other backend runs the two.
    fn group_norm_silu(
        &self,
        scope: &str,
        x: &Self::T,
        groups: usize,
        weight: &Self::T,
        bias: &Self::T,
        eps: f32,
    ) -> Result<Self::T> {
        group_norm_silu_composite(self, scope, x, groups, weight, bias, eps)
    }

    /// Nearest-neighbour 2x upsampling of [B, C, H, W], as F.interpolate(scale_factor=2.0).
    ///
    /// Lowered as reshape + broadcast multiply by ones + reshape instead of ONNX Resize, whose
    /// coordinate modes differ across runtimes; this form is exact everywhere.
    fn upsample_nearest2x(&self, x: &Self::T) -> Result<Self::T> {
        let s = self.shape(x);
        let [c, h, w] = match known_chw(&s) {
            Some(v) => v,
            None => return shape_err("upsample_nearest2x", "needs a known [B, C, H, W] input"),
        };
        let x6 = self.reshape(x, &[0, c, h, 1, w, 1])?;
        let ones = self.constant(&[1.0; 4], &[1, 1, 1, 2, 1, 2])?;
        let wide = self.mul(&x6, &ones)?;
        self.reshape(&wide, &[0, c, 2 * h, 2 * w])
    }

    /// softmax(q k^T * scale) v over [B, heads, N, d] tensors ([`attention_composite`]; the
    /// eager CPU backend runs it as one fused kernel).
    fn attention(&self, q: &Self::T, k: &Self::T, v: &Self::T, scale: f32) -> Result<Self::T> {
        attention_composite(self, q, k, v, scale)
    }

    /// diffusers' `get_timestep_embedding`: t [B] -> [B, dim] sinusoidal features.
    /// https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/embeddings.py
    fn timestep_embedding(
        &self,
        t: &Self::T,
        dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<Self::T> {
        if !dim.is_multiple_of(2) {
            return shape_err("timestep_embedding", format!("odd dimension {dim}"));
        }
        // sin/cos of arguments up to ~1000 need fp32: an fp16 export keeps this scope in fp32
        self.scoped(TIMESTEP_EMBEDDING_SCOPE, || {
            let half = dim / 2;
            // exponent = -ln(10000) * arange(half) / (half - shift), in float32 as torch computes it.
            let log_max = -(10000f64).ln() as f32;
            let freqs: Vec<f32> = (0..half)
                .map(|i| ((log_max * i as f32) / (half as f32 - freq_shift)).exp())
                .collect();
            let freqs = self.constant(&freqs, &[1, half])?;
            let t = self.reshape(t, &[-1, 1])?;
            let args = self.mul(&t, &freqs)?;
            let sin = self.unary(UnaryOp::Sin, &args)?;
            let cos = self.unary(UnaryOp::Cos, &args)?;
            if flip_sin_to_cos {
                self.concat(&[&cos, &sin], 1)
            } else {
                self.concat(&[&sin, &cos], 1)
            }
        })
    }
}

/// GroupNorm over [B, C, ...] with per-channel affine `weight`/`bias` [C], as torch.nn.GroupNorm,
/// from primitives: what every backend traces and the fused CPU kernel is checked against.
///
/// Lowered to reshape + two means rather than ONNX GroupNormalization: that op had a spec error
/// fixed only in opset 21 (scale/bias per group before it) and runtimes still differ on it.
pub fn group_norm_composite<O: Ops + ?Sized>(
    o: &O,
    x: &O::T,
    groups: usize,
    weight: &O::T,
    bias: &O::T,
    eps: f32,
) -> Result<O::T> {
    let shape = o.shape(x);
    let channels = match shape.get(1).and_then(|d| d.known()) {
        Some(c) => c,
        None => return shape_err("group_norm", "needs a known channel axis 1"),
    };
    if groups == 0 || channels % groups != 0 {
        return shape_err(
            "group_norm",
            format!("{channels} channels not divisible into {groups} groups"),
        );
    }
    // 1. statistics per (batch, group); the scope lets an fp16 export keep them in fp32
    let normed = o.scoped(NORM_STATS_SCOPE, || -> Result<O::T> {
        let grouped = o.reshape(x, &[0, groups as i64, -1])?;
        let mean = o.mean_keepdim(&grouped, 2)?;
        let centered = o.sub(&grouped, &mean)?;
        let sq = o.mul(&centered, &centered)?;
        let var = o.mean_keepdim(&sq, 2)?;
        let std = o.unary(UnaryOp::Sqrt, &o.affine(&var, 1.0, eps)?)?;
        o.div(&centered, &std)
    })?;
    // 2. back to the input layout, then the per-channel affine
    let mut back = vec![0i64];
    back.extend(shape[1..].iter().map(|d| d.known().unwrap_or(1) as i64));
    let normed = o.reshape(&normed, &back)?;
    let mut cshape = vec![1i64, channels as i64];
    cshape.extend(std::iter::repeat_n(1, shape.len() - 2));
    let w = o.reshape(weight, &cshape)?;
    let b = o.reshape(bias, &cshape)?;
    o.add(&o.mul(&normed, &w)?, &b)
}

/// x * sigmoid(x) from primitives.
pub fn silu_composite<O: Ops + ?Sized>(o: &O, x: &O::T) -> Result<O::T> {
    let s = o.unary(UnaryOp::Sigmoid, x)?;
    o.mul(x, &s)
}

/// The backend's own group norm (in `scope`) then its SiLU.
pub fn group_norm_silu_composite<O: Ops + ?Sized>(
    o: &O,
    scope: &str,
    x: &O::T,
    groups: usize,
    weight: &O::T,
    bias: &O::T,
    eps: f32,
) -> Result<O::T> {
    let h = o.scoped(scope, || o.group_norm(x, groups, weight, bias, eps))?;
    o.silu(&h)
}

/// softmax(q k^T * scale) v from primitives: what every backend traces.
pub fn attention_composite<O: Ops + ?Sized>(
    o: &O,
    q: &O::T,
    k: &O::T,
    v: &O::T,
    scale: f32,
) -> Result<O::T> {
    let kt = o.transpose(k, &[0, 1, 3, 2])?;
    let scores = o.scale(&o.matmul(q, &kt)?, scale)?;
    let probs = o.softmax_last_dim(&scores)?;
    o.matmul(&probs, v)
}

fn known_chw(s: &[Dim]) -> Option<[i64; 3]> {
    if s.len() != 4 {
        return None;
    }
    Some([
        s[1].known()? as i64,
        s[2].known()? as i64,
        s[3].known()? as i64,
    ])
}

/// Resolve an ONNX-style reshape spec against a concrete input shape.
pub fn resolve_reshape(input: &[usize], spec: &[i64]) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => match input.get(i) {
                Some(&d) => out.push(d),
                None => return shape_err("reshape", format!("0 at axis {i} beyond input rank")),
            },
            -1 => {
                if infer.is_some() {
                    return shape_err("reshape", "more than one -1");
                }
                infer = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            s => return shape_err("reshape", format!("invalid dimension {s}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return shape_err("reshape", format!("cannot infer -1: {input:?} -> {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return shape_err(
            "reshape",
            format!("element count differs: {input:?} -> {spec:?}"),
        );
    }
    Ok(out)
}
