//! UNet mirroring diffusers' `UNet2DModel` (models/unets/unet_2d.py) with the same parameter
//! names, so diffusers checkpoints load into it directly.
//! https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/unets/unet_2d.py

use super::layers::{
    conv2d, downsample2d, embedding, group_norm, group_norm_silu, join, linear, spatial, upsample2d,
};
use flashctl_graphs::{GraphError, Ops, Result};
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}
fn default_eps() -> f32 {
    1e-5
}
fn default_one() -> f32 {
    1.0
}
fn default_pad() -> usize {
    1
}
fn default_shift() -> String {
    "default".into()
}

/// The `UNet2DModel` config fields flashctl implements, named as in diffusers' config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f32,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f32,
    #[serde(default = "default_pad")]
    pub downsample_padding: usize,
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f32,
    #[serde(default)]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default = "default_true")]
    pub add_attention: bool,
    /// Width of the time embedding (diffusers default: 4 x block_out_channels[0]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_embedding_dim: Option<usize>,
    /// Group count of the mid-block attention's norm (diffusers: norm_num_groups under the
    /// "default" time scale shift, no norm at all under "scale_shift").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_norm_num_groups: Option<usize>,
    /// `UNet2DConditionModel`: its cross-attention (Transformer2DModel) blocks; `None` for a
    /// `UNet2DModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attention: Option<Box<CrossAttentionConfig>>,
}

/// What a `UNet2DConditionModel` adds to the UNet2DModel skeleton: `CrossAttnDownBlock2D` /
/// `CrossAttnUpBlock2D` levels and a `UNetMidBlock2DCrossAttn`, each attention a
/// `Transformer2DModel` of `BasicTransformerBlock`s (self-attention, cross-attention on
/// `encoder_hidden_states`, GEGLU feed-forward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossAttentionConfig {
    /// width of `encoder_hidden_states` (the text encoder's hidden size)
    pub cross_attention_dim: usize,
    /// attention heads of each level, in down order (diffusers' `num_attention_heads`, which SD
    /// 1.x/2.x configs spell `attention_head_dim`); the mid block uses the last
    pub heads: Vec<usize>,
    /// `BasicTransformerBlock`s per Transformer2DModel, per level in down order
    pub transformer_layers: Vec<usize>,
    /// proj_in / proj_out as linear layers on tokens (SD 2.x) instead of 1x1 convolutions
    pub use_linear_projection: bool,
    /// attention scores in fp32 (SD 2.1); the eager path and fp32 graphs are fp32 throughout
    pub upcast_attention: bool,
    /// width of `timestep_cond` (a guidance-scale embedding, LCM-style students): projected
    /// without bias and added to the timestep embedding before `time_embedding.linear_1`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_cond_proj_dim: Option<usize>,
}

impl UnetConfig {
    /// Reject configurations the forward pass cannot honour, naming the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "block_out_channels ({n}), down_block_types ({}) and up_block_types ({}) must have the same non-zero length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let (down_ok, up_ok): (&[&str], &[&str]) = match &self.cross_attention {
            None => (
                &["DownBlock2D", "AttnDownBlock2D"],
                &["UpBlock2D", "AttnUpBlock2D"],
            ),
            Some(x) => {
                if x.heads.len() != n || x.transformer_layers.len() != n {
                    return Err(format!(
                        "cross attention: {} head counts and {} transformer layer counts for {n} levels",
                        x.heads.len(),
                        x.transformer_layers.len()
                    ));
                }
                for (&c, &h) in self.block_out_channels.iter().zip(&x.heads) {
                    if h == 0 || !c.is_multiple_of(h) {
                        return Err(format!(
                            "{h} attention heads do not divide a level of width {c}"
                        ));
                    }
                }
                if x.cross_attention_dim == 0 {
                    return Err("cross_attention_dim must be positive".into());
                }
                (
                    &["DownBlock2D", "CrossAttnDownBlock2D"],
                    &["UpBlock2D", "CrossAttnUpBlock2D"],
                )
            }
        };
        for t in &self.down_block_types {
            if !down_ok.contains(&t.as_str()) {
                return Err(format!("unsupported down_block_types entry `{t}`"));
            }
        }
        for t in &self.up_block_types {
            if !up_ok.contains(&t.as_str()) {
                return Err(format!("unsupported up_block_types entry `{t}`"));
            }
        }
        if self.resnet_time_scale_shift != "default"
            && self.resnet_time_scale_shift != "scale_shift"
        {
            return Err(format!(
                "unsupported resnet_time_scale_shift `{}`",
                self.resnet_time_scale_shift
            ));
        }
        for &c in &self.block_out_channels {
            if c % self.norm_num_groups != 0 {
                return Err(format!(
                    "block_out_channels entry {c} is not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
        }
        if let Some(g) = self.attn_norm_num_groups {
            let mid = self.block_out_channels[n - 1];
            if g == 0 || !mid.is_multiple_of(g) {
                return Err(format!(
                    "attn_norm_num_groups {g} does not divide the mid-block width {mid}"
                ));
            }
        }
        if self.time_embed_dim() == 0 {
            return Err("time_embedding_dim must be positive".into());
        }
        let down = 1usize << (n - 1);
        if !self.sample_size.is_multiple_of(down) {
            return Err(format!(
                "sample_size {} must be divisible by {down} for {n} levels",
                self.sample_size
            ));
        }
        Ok(())
    }

    fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Groups of the mid-block attention norm; None means that attention has no norm
    /// (diffusers `UNetMidBlock2D`: `attn_groups = resnet_groups if shift == "default" else None`).
    fn mid_attention_groups(&self) -> Option<usize> {
        self.attn_norm_num_groups
            .or((self.resnet_time_scale_shift == "default").then_some(self.norm_num_groups))
    }
}

struct Ctx<'a> {
    c: &'a UnetConfig,
}

impl Ctx<'_> {
    /// diffusers `ResnetBlock2D` with this UNet's norms and time embedding.
    #[allow(clippy::too_many_arguments)]
    fn resnet<O: Ops>(
        &self,
        o: &O,
        p: &str,
        x: &O::T,
        temb: &O::T,
        in_c: usize,
        out_c: usize,
        out_scale: f32,
    ) -> Result<O::T> {
        let c = self.c;
        let time = TimeInput {
            temb,
            dim: c.time_embed_dim(),
            scale_shift: c.resnet_time_scale_shift == "scale_shift",
        };
        let norm = NormSpec {
            groups: c.norm_num_groups,
            eps: c.norm_eps,
        };
        resnet_block(o, p, x, Some(time), in_c, out_c, out_scale, norm)
    }

    /// The UNet2D attention blocks (`attention_head_dim` as UNet2DModel reads it: head width).
    fn attention<O: Ops>(
        &self,
        o: &O,
        p: &str,
        x: &O::T,
        channels: usize,
        groups: Option<usize>,
        out_scale: f32,
    ) -> Result<O::T> {
        let c = self.c;
        let head_dim = c.attention_head_dim.unwrap_or(channels);
        attention_block(o, p, x, channels, head_dim, groups, c.norm_eps, out_scale)
    }
}

/// Group count and epsilon of a block's group norms.
#[derive(Debug, Clone, Copy)]
pub struct NormSpec {
    pub groups: usize,
    pub eps: f32,
}

/// A resnet's time embedding: the embedding, its width, added (default) or as scale/shift.
pub struct TimeInput<'a, T> {
    pub temb: &'a T,
    pub dim: usize,
    pub scale_shift: bool,
}

/// diffusers `ResnetBlock2D` (resnet.py); `time` None is the VAE's (`temb_channels=None`).
#[allow(clippy::too_many_arguments)]
pub fn resnet_block<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    time: Option<TimeInput<'_, O::T>>,
    in_c: usize,
    out_c: usize,
    out_scale: f32,
    norm: NormSpec,
) -> Result<O::T> {
    let (g, eps) = (norm.groups, norm.eps);
    o.scoped(p, || {
        // 1. norm1 -> silu -> conv1
        let h = group_norm_silu(o, &join(p, "norm1"), x, g, in_c, eps)?;
        let mut h = conv2d(o, &join(p, "conv1"), &h, in_c, out_c, 3, 1, 1)?;
        // 2. time embedding projection, added (default) or as scale/shift after norm2
        match time {
            Some(time) => {
                let proj_out = if time.scale_shift { 2 * out_c } else { out_c };
                let t = o.silu(time.temb)?;
                let t = linear(o, &join(p, "time_emb_proj"), &t, time.dim, proj_out)?;
                let t = o.reshape(&t, &[0, proj_out as i64, 1, 1])?;
                if time.scale_shift {
                    // torch.chunk(2, dim=1): [B, 2C, 1, 1] -> scale, shift
                    let t5 = o.reshape(&t, &[0, 2, out_c as i64, 1, 1])?;
                    let (scale, shift) = split_pair(o, &t5, out_c)?;
                    h = group_norm(o, &join(p, "norm2"), &h, g, out_c, eps)?;
                    let one_plus = o.affine(&scale, 1.0, 1.0)?;
                    h = o.add(&o.mul(&h, &one_plus)?, &shift)?;
                    h = o.silu(&h)?;
                } else {
                    h = o.add(&h, &t)?;
                    h = group_norm_silu(o, &join(p, "norm2"), &h, g, out_c, eps)?;
                }
            }
            None => h = group_norm_silu(o, &join(p, "norm2"), &h, g, out_c, eps)?,
        }
        // 3. conv2 (dropout is identity at inference and disabled in training)
        let h = conv2d(o, &join(p, "conv2"), &h, out_c, out_c, 3, 1, 1)?;
        // 4. shortcut and residual
        let skip = if in_c != out_c {
            conv2d(o, &join(p, "conv_shortcut"), x, in_c, out_c, 1, 1, 0)?
        } else {
            x.clone()
        };
        let y = o.add(&skip, &h)?;
        if out_scale != 1.0 {
            o.scale(&y, 1.0 / out_scale)
        } else {
            Ok(y)
        }
    })
}

/// diffusers `Attention` with `AttnProcessor2_0`, as the UNet2D and VAE attention blocks build
/// it (group norm, q/k/v with biases, residual connection, `rescale_output_factor`).
#[allow(clippy::too_many_arguments)]
pub fn attention_block<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    channels: usize,
    head_dim: usize,
    groups: Option<usize>,
    eps: f32,
    out_scale: f32,
) -> Result<O::T> {
    if head_dim == 0 || !channels.is_multiple_of(head_dim) {
        return Err(GraphError::Invalid(format!(
            "{p}: {channels} channels not divisible by attention_head_dim {head_dim}"
        )));
    }
    let heads = channels / head_dim;
    o.scoped(p, || {
        let (h, w) = spatial(o, x);
        let ch = channels as i64;
        // 1. group norm (when the block has one) on [B, C, H*W], then tokens [B, HW, C]
        let flat = o.reshape(x, &[0, ch, h * w])?;
        let normed = match groups {
            Some(g) => group_norm(o, &join(p, "group_norm"), &flat, g, channels, eps)?,
            None => flat,
        };
        let tokens = o.transpose(&normed, &[0, 2, 1])?;
        // 2. projections, split heads [B, heads, HW, d]
        let split = |name: &str| -> Result<O::T> {
            let y = linear(o, &join(p, name), &tokens, channels, channels)?;
            let y = o.reshape(&y, &[0, h * w, heads as i64, head_dim as i64])?;
            o.transpose(&y, &[0, 2, 1, 3])
        };
        let (q, k, v) = (split("to_q")?, split("to_k")?, split("to_v")?);
        let a = o.attention(&q, &k, &v, 1.0 / (head_dim as f32).sqrt())?;
        // 3. merge heads, output projection, back to [B, C, H, W], residual, rescale
        let a = o.transpose(&a, &[0, 2, 1, 3])?;
        let a = o.reshape(&a, &[0, h * w, ch])?;
        let a = linear(o, &join(p, "to_out.0"), &a, channels, channels)?;
        let a = o.transpose(&a, &[0, 2, 1])?;
        let a = o.reshape(&a, &[0, ch, h, w])?;
        let y = o.add(&a, x)?;
        if out_scale != 1.0 {
            o.scale(&y, 1.0 / out_scale)
        } else {
            Ok(y)
        }
    })
}

impl Ctx<'_> {
    /// diffusers `Transformer2DModel` (continuous input) as the cross-attention blocks build
    /// it: GroupNorm (eps 1e-6), proj_in (1x1 conv, or linear on tokens), `layers`
    /// `BasicTransformerBlock`s, proj_out, residual.
    #[allow(clippy::too_many_arguments)]
    fn transformer_2d<O: Ops>(
        &self,
        o: &O,
        p: &str,
        x: &O::T,
        context: &O::T,
        channels: usize,
        heads: usize,
        layers: usize,
    ) -> Result<O::T> {
        let c = self.c;
        let cross = c.cross_attention.as_ref().expect("a cross-attention UNet");
        let linear_proj = cross.use_linear_projection;
        o.scoped(p, || {
            let (hh, ww) = spatial(o, x);
            let ch = channels as i64;
            let normed = group_norm(o, &join(p, "norm"), x, c.norm_num_groups, channels, 1e-6)?;
            let to_tokens = |v: &O::T| -> Result<O::T> {
                let flat = o.reshape(v, &[0, ch, hh * ww])?;
                o.transpose(&flat, &[0, 2, 1])
            };
            let mut tokens = if linear_proj {
                linear(
                    o,
                    &join(p, "proj_in"),
                    &to_tokens(&normed)?,
                    channels,
                    channels,
                )?
            } else {
                to_tokens(&conv2d(
                    o,
                    &join(p, "proj_in"),
                    &normed,
                    channels,
                    channels,
                    1,
                    1,
                    0,
                )?)?
            };
            for l in 0..layers {
                tokens = basic_transformer_block(
                    o,
                    &join(p, &format!("transformer_blocks.{l}")),
                    &tokens,
                    context,
                    channels,
                    heads,
                    cross.cross_attention_dim,
                )?;
            }
            let to_image = |v: &O::T| -> Result<O::T> {
                let chw = o.transpose(v, &[0, 2, 1])?;
                o.reshape(&chw, &[0, ch, hh, ww])
            };
            let out = if linear_proj {
                to_image(&linear(
                    o,
                    &join(p, "proj_out"),
                    &tokens,
                    channels,
                    channels,
                )?)?
            } else {
                conv2d(
                    o,
                    &join(p, "proj_out"),
                    &to_image(&tokens)?,
                    channels,
                    channels,
                    1,
                    1,
                    0,
                )?
            };
            o.add(&out, x)
        })
    }
}

/// diffusers `Attention` without biases on q/k/v (as BasicTransformerBlock builds it):
/// tokens [B, N, dim] attend to `kv` [B, M, kv_dim] (itself for self-attention).
fn transformer_attention<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    kv: &O::T,
    dim: usize,
    kv_dim: usize,
    heads: usize,
) -> Result<O::T> {
    let head_dim = dim / heads;
    let proj = |name: &str, v: &O::T, in_f: usize| -> Result<O::T> {
        let w = o.param(
            &join(&join(p, name), "weight"),
            &[dim, in_f],
            flashctl_graphs::ops::Init::Uniform {
                lo: -1.0 / (in_f as f64).sqrt(),
                up: 1.0 / (in_f as f64).sqrt(),
            },
        )?;
        let y = o.scoped(&join(p, name), || o.linear(v, &w, None))?;
        let y = o.reshape(&y, &[0, -1, heads as i64, head_dim as i64])?;
        o.transpose(&y, &[0, 2, 1, 3])
    };
    let q = proj("to_q", x, dim)?;
    let k = proj("to_k", kv, kv_dim)?;
    let v = proj("to_v", kv, kv_dim)?;
    let a = o.attention(&q, &k, &v, 1.0 / (head_dim as f32).sqrt())?;
    let a = o.transpose(&a, &[0, 2, 1, 3])?;
    let a = o.reshape(&a, &[0, -1, dim as i64])?;
    linear(o, &join(p, "to_out.0"), &a, dim, dim)
}

/// diffusers `BasicTransformerBlock` (layer norms, no ada-norm): self-attention, cross-attention
/// on `context`, GEGLU feed-forward (inner width 4 x dim), each pre-norm with a residual.
fn basic_transformer_block<O: Ops>(
    o: &O,
    p: &str,
    x: &O::T,
    context: &O::T,
    dim: usize,
    heads: usize,
    context_dim: usize,
) -> Result<O::T> {
    use super::layers::layer_norm;
    let n1 = layer_norm(o, &join(p, "norm1"), x, dim, 1e-5)?;
    let h = o.add(
        &transformer_attention(o, &join(p, "attn1"), &n1, &n1, dim, dim, heads)?,
        x,
    )?;
    let n2 = layer_norm(o, &join(p, "norm2"), &h, dim, 1e-5)?;
    let cross = transformer_attention(o, &join(p, "attn2"), &n2, context, dim, context_dim, heads)?;
    let h = o.add(&cross, &h)?;
    let n3 = layer_norm(o, &join(p, "norm3"), &h, dim, 1e-5)?;
    let inner = 4 * dim;
    // GEGLU: proj to 2 x inner, (hidden, gate) = chunk(2, -1), hidden * gelu(gate)
    let both = linear(o, &join(p, "ff.net.0.proj"), &n3, dim, 2 * inner)?;
    let pairs = o.reshape(&both, &[0, -1, 2, inner as i64])?;
    let last = o.transpose(&pairs, &[0, 1, 3, 2])?; // [B, N, inner, 2]
    let pick = |i: usize| -> Result<O::T> {
        let sel = if i == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
        let w = o.constant(&sel, &[2, 1])?;
        o.reshape(&o.matmul(&last, &w)?, &[0, -1, inner as i64])
    };
    let (hidden, gate) = (pick(0)?, pick(1)?);
    let gate = super::clip_text::activation(o, super::clip_text::ClipActivation::Gelu, &gate)?;
    let ff = linear(o, &join(p, "ff.net.2"), &o.mul(&hidden, &gate)?, inner, dim)?;
    o.add(&ff, &h)
}

/// Split [B, 2, C, 1, 1] into two [B, C, 1, 1] halves with constant selection weights, using only
/// ops every runtime has (a 1x2 linear over the pair axis).
fn split_pair<O: Ops>(o: &O, t5: &O::T, out_c: usize) -> Result<(O::T, O::T)> {
    // move the pair axis last: [B, C, 1, 1, 2]
    let last = o.transpose(t5, &[0, 2, 3, 4, 1])?;
    let pick = |i: usize| -> Result<O::T> {
        let sel = if i == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
        let w = o.constant(&sel, &[2, 1])?;
        let y = o.matmul(&last, &w)?; // [B, C, 1, 1, 1]
        o.reshape(&y, &[0, out_c as i64, 1, 1])
    };
    Ok((pick(0)?, pick(1)?))
}

pub fn forward<O: Ops>(
    c: &UnetConfig,
    o: &O,
    x: &O::T,
    t: &O::T,
    class_labels: Option<&O::T>,
) -> Result<O::T> {
    forward_with_context(c, o, x, t, class_labels, None)
}

/// [`forward`] of a `UNet2DConditionModel`: `context` is `encoder_hidden_states`
/// [B, tokens, cross_attention_dim].
pub fn forward_with_context<O: Ops>(
    c: &UnetConfig,
    o: &O,
    x: &O::T,
    t: &O::T,
    class_labels: Option<&O::T>,
    context: Option<&O::T>,
) -> Result<O::T> {
    forward_conditioned(c, o, x, t, class_labels, context, None)
}

/// [`forward_with_context`] with a `timestep_cond` [B or 1, time_cond_proj_dim] (diffusers'
/// `timestep_cond`, for UNets with `time_cond_proj_dim`).
pub fn forward_conditioned<O: Ops>(
    c: &UnetConfig,
    o: &O,
    x: &O::T,
    t: &O::T,
    class_labels: Option<&O::T>,
    context: Option<&O::T>,
    timestep_cond: Option<&O::T>,
) -> Result<O::T> {
    c.validate().map_err(GraphError::Invalid)?;
    let cross = match (&c.cross_attention, context) {
        (Some(x), Some(ctx)) => Some((x, ctx)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(GraphError::Invalid(
                "a UNet2DConditionModel needs encoder_hidden_states".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(GraphError::Invalid(
                "encoder_hidden_states given to a UNet without cross-attention".into(),
            ))
        }
    };
    let cx = Ctx { c };
    let boc = &c.block_out_channels;
    let ted = c.time_embed_dim();
    // 0. center input
    let x = if c.center_input_sample {
        o.affine(x, 2.0, -1.0)?
    } else {
        x.clone()
    };
    // 1. time (and class) embedding
    let temb = o.scoped("time_proj", || {
        o.timestep_embedding(t, boc[0], c.flip_sin_to_cos, c.freq_shift)
    })?;
    let cond_dim = c
        .cross_attention
        .as_ref()
        .and_then(|x| x.time_cond_proj_dim);
    let temb = match (timestep_cond, cond_dim) {
        (None, _) => temb,
        (Some(cond), Some(dim)) => {
            let w = o.param(
                "time_embedding.cond_proj.weight",
                &[boc[0], dim],
                flashctl_graphs::ops::Init::Uniform {
                    lo: -1.0 / (dim as f64).sqrt(),
                    up: 1.0 / (dim as f64).sqrt(),
                },
            )?;
            let proj = o.scoped("time_embedding.cond_proj", || o.linear(cond, &w, None))?;
            o.add(&temb, &proj)?
        }
        (Some(_), None) => {
            return Err(GraphError::Invalid(
                "timestep_cond given to a UNet without time_cond_proj_dim".into(),
            ))
        }
    };
    let temb = linear(o, "time_embedding.linear_1", &temb, boc[0], ted)?;
    let temb = o.silu(&temb)?;
    let mut emb = linear(o, "time_embedding.linear_2", &temb, ted, ted)?;
    if let Some(n) = c.num_class_embeds {
        let y = class_labels.ok_or_else(|| {
            GraphError::Invalid("class_labels are required for a class-conditional UNet".into())
        })?;
        let cemb = embedding(o, "class_embedding", y, n, ted)?;
        emb = o.add(&emb, &cemb)?;
    }
    // 2. conv_in and the down path, keeping every residual
    let mut h = conv2d(o, "conv_in", &x, c.in_channels, boc[0], 3, 1, 1)?;
    let mut skips = vec![(h.clone(), boc[0])];
    let mut out_c = boc[0];
    for (i, ty) in c.down_block_types.iter().enumerate() {
        let p = format!("down_blocks.{i}");
        let in_c = out_c;
        out_c = boc[i];
        let is_final = i + 1 == boc.len();
        for j in 0..c.layers_per_block {
            let rin = if j == 0 { in_c } else { out_c };
            h = cx.resnet(o, &format!("{p}.resnets.{j}"), &h, &emb, rin, out_c, 1.0)?;
            if ty == "CrossAttnDownBlock2D" {
                let (x, ctx) = cross.expect("validated: cross blocks need cross attention");
                h = cx.transformer_2d(
                    o,
                    &format!("{p}.attentions.{j}"),
                    &h,
                    ctx,
                    out_c,
                    x.heads[i],
                    x.transformer_layers[i],
                )?;
            }
            if ty == "AttnDownBlock2D" {
                h = cx.attention(
                    o,
                    &format!("{p}.attentions.{j}"),
                    &h,
                    out_c,
                    Some(c.norm_num_groups),
                    1.0,
                )?;
            }
            skips.push((h.clone(), out_c));
        }
        if !is_final {
            h = downsample2d(o, &p, &h, out_c, c.downsample_padding)?;
            skips.push((h.clone(), out_c));
        }
    }
    // 3. mid block: resnet, attention, resnet
    let mid = *boc.last().unwrap();
    let msf = c.mid_block_scale_factor;
    h = cx.resnet(o, "mid_block.resnets.0", &h, &emb, mid, mid, msf)?;
    if let Some((x, ctx)) = cross {
        let last = x.heads.len() - 1;
        h = cx.transformer_2d(
            o,
            "mid_block.attentions.0",
            &h,
            ctx,
            mid,
            x.heads[last],
            x.transformer_layers[last],
        )?;
    } else if c.add_attention {
        h = cx.attention(
            o,
            "mid_block.attentions.0",
            &h,
            mid,
            c.mid_attention_groups(),
            msf,
        )?;
    }
    h = cx.resnet(o, "mid_block.resnets.1", &h, &emb, mid, mid, msf)?;
    // 4. up path, consuming the residuals in reverse
    let rev: Vec<usize> = boc.iter().rev().copied().collect();
    let mut prev_out = rev[0];
    for (i, ty) in c.up_block_types.iter().enumerate() {
        let p = format!("up_blocks.{i}");
        let out_c = rev[i];
        let is_final = i + 1 == rev.len();
        let layers = c.layers_per_block + 1;
        for j in 0..layers {
            let (skip, skip_c) = skips
                .pop()
                .ok_or_else(|| GraphError::Invalid("residual stack exhausted".into()))?;
            let rin = if j == 0 { prev_out } else { out_c };
            h = o.concat(&[&h, &skip], 1)?;
            h = cx.resnet(
                o,
                &format!("{p}.resnets.{j}"),
                &h,
                &emb,
                rin + skip_c,
                out_c,
                1.0,
            )?;
            if ty == "CrossAttnUpBlock2D" {
                let (x, ctx) = cross.expect("validated: cross blocks need cross attention");
                let level = rev.len() - 1 - i;
                h = cx.transformer_2d(
                    o,
                    &format!("{p}.attentions.{j}"),
                    &h,
                    ctx,
                    out_c,
                    x.heads[level],
                    x.transformer_layers[level],
                )?;
            }
            if ty == "AttnUpBlock2D" {
                h = cx.attention(
                    o,
                    &format!("{p}.attentions.{j}"),
                    &h,
                    out_c,
                    Some(c.norm_num_groups),
                    1.0,
                )?;
            }
        }
        if !is_final {
            h = upsample2d(o, &p, &h, out_c)?;
        }
        prev_out = out_c;
    }
    // 5. output head
    let h = group_norm_silu(
        o,
        "conv_norm_out",
        &h,
        c.norm_num_groups,
        boc[0],
        c.norm_eps,
    )?;
    conv2d(o, "conv_out", &h, boc[0], c.out_channels, 3, 1, 1)
}
