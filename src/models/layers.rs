//! Parameterised building blocks (linear, conv, group norm) with torch's default inits, so a
//! model trained from scratch starts where its PyTorch twin would.

use flashctl_graphs::ops::Init;
use flashctl_graphs::UnaryOp;
use flashctl_graphs::{Ops, Result};

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn fan_in_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// torch.nn.Linear: weight [out, in], bias [out].
pub fn linear<O: Ops>(o: &O, p: &str, x: &O::T, in_f: usize, out_f: usize) -> Result<O::T> {
    let w = o.param(&join(p, "weight"), &[out_f, in_f], fan_in_uniform(in_f))?;
    let b = o.param(&join(p, "bias"), &[out_f], fan_in_uniform(in_f))?;
    o.scoped(p, || o.linear(x, &w, Some(&b)))
}

/// torch.nn.Conv2d with square kernel `k`, bias.
#[allow(clippy::too_many_arguments)]
pub fn conv2d<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<O::T> {
    let fan_in = in_c * k * k;
    let w = o.param(
        &join(p, "weight"),
        &[out_c, in_c, k, k],
        fan_in_uniform(fan_in),
    )?;
    let b = o.param(&join(p, "bias"), &[out_c], fan_in_uniform(fan_in))?;
    o.scoped(p, || o.conv2d(x, &w, Some(&b), stride, padding))
}

/// A group norm's per-channel affine parameters (weight 1, bias 0 at init).
fn norm_affine<O: Ops>(o: &O, p: &str, channels: usize) -> Result<(O::T, O::T)> {
    let w = o.param(&join(p, "weight"), &[channels], Init::Const(1.0))?;
    let b = o.param(&join(p, "bias"), &[channels], Init::Const(0.0))?;
    Ok((w, b))
}

/// torch.nn.GroupNorm(groups, channels, eps, affine=True).
pub fn group_norm<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    groups: usize,
    channels: usize,
    eps: f32,
) -> Result<O::T> {
    let (w, b) = norm_affine(o, p, channels)?;
    o.scoped(p, || o.group_norm(x, groups, &w, &b, eps))
}

/// SiLU(torch.nn.GroupNorm(..)(x)): the same nodes as [`group_norm`] then `silu`, one fused
/// kernel in the eager CPU backend.
pub fn group_norm_silu<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    groups: usize,
    channels: usize,
    eps: f32,
) -> Result<O::T> {
    let (w, b) = norm_affine(o, p, channels)?;
    o.group_norm_silu(p, x, groups, &w, &b, eps)
}

/// torch.nn.Embedding(n, dim) looked up with int64 ids.
pub fn embedding<O: Ops>(o: &O, p: &str, ids: &O::T, n: usize, dim: usize) -> Result<O::T> {
    let table = o.param(
        &join(p, "weight"),
        &[n, dim],
        Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?;
    o.scoped(p, || o.embedding(&table, ids))
}

/// torch.nn.LayerNorm(dim, eps) over the last axis, from primitives (statistics in the norm-stats
/// scope, so an fp16 export keeps them in fp32).
pub fn layer_norm<O: Ops>(o: &O, p: &str, x: &O::T, dim: usize, eps: f32) -> Result<O::T> {
    let (w, b) = norm_affine(o, p, dim)?;
    let axis = o.shape(x).len().saturating_sub(1);
    o.scoped(p, || {
        let normed = o.scoped(
            flashctl_graphs::ops::NORM_STATS_SCOPE,
            || -> Result<O::T> {
                let mean = o.mean_keepdim(x, axis)?;
                let centered = o.sub(x, &mean)?;
                let var = o.mean_keepdim(&o.mul(&centered, &centered)?, axis)?;
                let std = o.unary(UnaryOp::Sqrt, &o.affine(&var, 1.0, eps)?)?;
                o.div(&centered, &std)
            },
        )?;
        o.add(&o.mul(&normed, &w)?, &b)
    })
}

/// (height, width) of an [N, C, H, W] value, as reshape targets (0 where unknown).
pub fn spatial<O: Ops>(o: &O, x: &O::T) -> (i64, i64) {
    let s = o.shape(x);
    let known = |i: usize| s.get(i).and_then(|d| d.known()).unwrap_or(0) as i64;
    (known(2), known(3))
}

/// diffusers `Downsample2D(use_conv=True)` named `{p}.downsamplers.0`: a stride-2 3x3 conv;
/// `padding` 0 pads right and bottom by one first (as diffusers does), 1 pads the conv.
pub fn downsample2d<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    channels: usize,
    padding: usize,
) -> Result<O::T> {
    let x = if padding == 0 {
        o.pad2d(x, [0, 1, 0, 1])?
    } else {
        x.clone()
    };
    let conv = format!("{p}.downsamplers.0.conv");
    conv2d(o, &conv, &x, channels, channels, 3, 2, padding)
}

/// diffusers `Upsample2D(use_conv=True)` named `{p}.upsamplers.0`: nearest 2x, then a 3x3 conv.
pub fn upsample2d<O: Ops>(o: &O, p: &str, x: &O::T, channels: usize) -> Result<O::T> {
    let up = format!("{p}.upsamplers.0");
    let h = o.scoped(&up, || o.upsample_nearest2x(x))?;
    conv2d(o, &join(&up, "conv"), &h, channels, channels, 3, 1, 1)
}
