//! A pipeline's `vae/` folder (diffusers `AutoencoderKL`: `config.json` +
//! `diffusion_pytorch_model.safetensors`): strict config mapping; the network is
//! `models::vae`.

use crate::diffusers::Fields;
use crate::models::vae::VaeConfig;
use serde_json::{Map, Value};

/// diffusers `AutoencoderKL.__init__` keyword arguments (diffusers 0.42), every one handled.
const VAE_KEYS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

pub fn parse_config(map: &Map<String, Value>) -> Result<VaeConfig, String> {
    let f = Fields {
        what: "AutoencoderKL",
        map,
    };
    let class = map.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if !class.is_empty() && class != "AutoencoderKL" {
        return Err(format!(
            "unsupported VAE class `_class_name` = \"{class}\" (flashctl reads AutoencoderKL)"
        ));
    }
    f.only_known(VAE_KEYS)?;
    f.require("act_fn", &["silu", "swish"], "silu")?;
    let boc = f.usizes("block_out_channels", &[64])?;
    for (k, ok) in [
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ] {
        let list = f.strings(k, &[ok])?;
        if let Some(bad) = list.iter().find(|t| t.as_str() != ok) {
            return Err(format!(
                "unsupported AutoencoderKL option `{k}` entry \"{bad}\" (flashctl supports: {ok})"
            ));
        }
        if list.len() != boc.len() {
            return Err(format!(
                "AutoencoderKL `{k}` has {} entries for {} block_out_channels",
                list.len(),
                boc.len()
            ));
        }
    }
    for k in ["latents_mean", "latents_std"] {
        if let Some(v) = f.get(k) {
            return Err(format!(
                "unsupported AutoencoderKL option `{k}` = {v} (per-channel latent statistics; flashctl supports null)"
            ));
        }
    }
    // force_upcast: the VAE in fp32 when the pipeline runs fp16; flashctl's eager path is fp32
    f.bool_or("force_upcast", true)?;
    let shift_factor = match f.get("shift_factor") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| f.bad("shift_factor", "a number or null"))? as f32,
        ),
    };
    let cfg = VaeConfig {
        in_channels: f.usize_or("in_channels", 3)?,
        out_channels: f.usize_or("out_channels", 3)?,
        latent_channels: f.usize_or("latent_channels", 4)?,
        block_out_channels: boc,
        layers_per_block: f.usize_or("layers_per_block", 1)?,
        norm_num_groups: f.usize_or("norm_num_groups", 32)?,
        use_quant_conv: f.bool_or("use_quant_conv", true)?,
        use_post_quant_conv: f.bool_or("use_post_quant_conv", true)?,
        mid_block_add_attention: f.bool_or("mid_block_add_attention", true)?,
        scaling_factor: f.f64_or("scaling_factor", 0.18215)? as f32,
        shift_factor,
    };
    cfg.validate()?;
    Ok(cfg)
}
