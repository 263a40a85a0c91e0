//! diffusers' `AutoencoderKL` (models/autoencoders/autoencoder_kl.py, vae.py), written once:
//! the decoder (latents -> image, what a text-to-image graph ends with) and the encoder's mean
//! (image -> latents, for distillation data). Parameter names are diffusers'
//! (`encoder.*`, `quant_conv.*`, `post_quant_conv.*`, `decoder.*`).

use super::layers::{conv2d, downsample2d, group_norm_silu, join, spatial, upsample2d};
use super::unet::{attention_block, resnet_block, NormSpec};
use flashctl_graphs::{GraphError, Ops, Result};
use serde::{Deserialize, Serialize};

/// The VAE's norms: diffusers builds Encoder/Decoder blocks with eps 1e-6.
const VAE_EPS: f32 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// `latents / scaling_factor (+ shift_factor)` is what the decoder takes
    pub scaling_factor: f32,
    pub shift_factor: Option<f32>,
}

impl VaeConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.block_out_channels.is_empty() {
            return Err("AutoencoderKL block_out_channels must not be empty".into());
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || !c.is_multiple_of(self.norm_num_groups) {
                return Err(format!(
                    "AutoencoderKL block_out_channels entry {c} is not divisible by \
                     norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
        }
        if self.latent_channels == 0 || self.layers_per_block == 0 {
            return Err(
                "AutoencoderKL latent_channels and layers_per_block must be positive".into(),
            );
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(format!(
                "AutoencoderKL scaling_factor {} is not a non-zero number",
                self.scaling_factor
            ));
        }
        Ok(())
    }

    fn norm(&self) -> NormSpec {
        NormSpec {
            groups: self.norm_num_groups,
            eps: VAE_EPS,
        }
    }

    /// Spatial downsampling factor (2 per level but the last).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// `UNetMidBlock2D` of the VAE: resnet, single-head attention (optional), resnet.
fn mid_block<O: Ops>(c: &VaeConfig, o: &O, p: &str, x: &O::T, ch: usize) -> Result<O::T> {
    let n = c.norm();
    let mut h = resnet_block(o, &join(p, "resnets.0"), x, None, ch, ch, 1.0, n)?;
    if c.mid_block_add_attention {
        let a = join(p, "attentions.0");
        h = attention_block(o, &a, &h, ch, ch, Some(n.groups), VAE_EPS, 1.0)?;
    }
    resnet_block(o, &join(p, "resnets.1"), &h, None, ch, ch, 1.0, n)
}

/// The decoder on `z` = latents / scaling_factor (+ shift_factor): [B, latent, h, w] ->
/// image [B, out_channels, h*f, w*f] in diffusers' [-1, 1] range.
pub fn decode<O: Ops>(c: &VaeConfig, o: &O, z: &O::T) -> Result<O::T> {
    c.validate().map_err(GraphError::Invalid)?;
    let boc = &c.block_out_channels;
    let lc = c.latent_channels;
    let n = c.norm();
    let z = if c.use_post_quant_conv {
        conv2d(o, "post_quant_conv", z, lc, lc, 1, 1, 0)?
    } else {
        z.clone()
    };
    o.scoped("decoder", || {
        let top = *boc.last().expect("validated");
        let mut h = conv2d(o, "decoder.conv_in", &z, lc, top, 3, 1, 1)?;
        h = mid_block(c, o, "decoder.mid_block", &h, top)?;
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut out_c = rev[0];
        for (i, &level_c) in rev.iter().enumerate() {
            let p = format!("decoder.up_blocks.{i}");
            let in_c = out_c;
            out_c = level_c;
            for j in 0..=c.layers_per_block {
                let rin = if j == 0 { in_c } else { out_c };
                h = resnet_block(o, &format!("{p}.resnets.{j}"), &h, None, rin, out_c, 1.0, n)?;
            }
            if i + 1 < rev.len() {
                h = upsample2d(o, &p, &h, out_c)?;
            }
        }
        let h = group_norm_silu(o, "decoder.conv_norm_out", &h, n.groups, boc[0], VAE_EPS)?;
        conv2d(o, "decoder.conv_out", &h, boc[0], c.out_channels, 3, 1, 1)
    })
}

/// The mean of the encoder's latent distribution (`vae.encode(x).latent_dist.mean`), before
/// scaling: image [B, in_channels, H, W] in [-1, 1] -> [B, latent, H/f, W/f].
pub fn encode_mean<O: Ops>(c: &VaeConfig, o: &O, x: &O::T) -> Result<O::T> {
    c.validate().map_err(GraphError::Invalid)?;
    let boc = &c.block_out_channels;
    let lc = c.latent_channels;
    let n = c.norm();
    let moments = o.scoped("encoder", || {
        let mut h = conv2d(o, "encoder.conv_in", x, c.in_channels, boc[0], 3, 1, 1)?;
        let mut out_c = boc[0];
        for (i, &level_c) in boc.iter().enumerate() {
            let p = format!("encoder.down_blocks.{i}");
            let in_c = out_c;
            out_c = level_c;
            for j in 0..c.layers_per_block {
                let rin = if j == 0 { in_c } else { out_c };
                h = resnet_block(o, &format!("{p}.resnets.{j}"), &h, None, rin, out_c, 1.0, n)?;
            }
            if i + 1 < boc.len() {
                // Downsample2D(padding=0): pad right and bottom by one, then a stride-2 conv
                h = downsample2d(o, &p, &h, out_c, 0)?;
            }
        }
        let top = out_c;
        h = mid_block(c, o, "encoder.mid_block", &h, top)?;
        let h = group_norm_silu(o, "encoder.conv_norm_out", &h, n.groups, top, VAE_EPS)?;
        conv2d(o, "encoder.conv_out", &h, top, 2 * lc, 3, 1, 1)
    })?;
    let moments = if c.use_quant_conv {
        conv2d(o, "quant_conv", &moments, 2 * lc, 2 * lc, 1, 1, 0)?
    } else {
        moments
    };
    first_half_channels(o, &moments, lc)
}

/// Channels [0, half) of [B, 2*half, H, W] (torch.chunk(2, dim=1)[0]) with ops every runtime
/// has: the pair axis moved last and selected by a constant 2x1 product.
fn first_half_channels<O: Ops>(o: &O, x: &O::T, half: usize) -> Result<O::T> {
    let (h, w) = spatial(o, x);
    let pairs = o.reshape(x, &[0, 2, half as i64 * h * w])?;
    let last = o.transpose(&pairs, &[0, 2, 1])?; // [B, half*h*w, 2]
    let sel = o.constant(&[1.0, 0.0], &[2, 1])?;
    let y = o.matmul(&last, &sel)?;
    o.reshape(&y, &[0, half as i64, h, w])
}
