//! diffusers checkpoints: `UNet2DModel` directories (`config.json` +
//! `diffusion_pytorch_model.safetensors`) with a `DDPMScheduler`/`DDIMScheduler` config beside
//! them (`scheduler_config.json`) or in a sibling `scheduler/` folder, as in a pipeline directory.
//!
//! Configs are read strictly: a missing field takes diffusers' own default, a field flashctl
//! implements is mapped, a field that does not change inference (dropout, bookkeeping) is
//! accepted, and anything else — or a supported field with a value flashctl cannot honour — is
//! refused with its name and value. Nothing is silently ignored.

use crate::models::UnetConfig;
use crate::schedule::ScheduleConfig;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const UNET_CONFIG: &str = "config.json";
pub const UNET_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";

/// Where the parts of a diffusers model live.
#[derive(Debug, Clone)]
pub struct DiffusersLayout {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub scheduler: PathBuf,
}

/// True when `dir/config.json` (or `dir/unet/config.json`) is a diffusers config (`_class_name`).
pub fn is_diffusers_dir(dir: &Path) -> bool {
    let probe = |p: PathBuf| -> bool {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v.get("_class_name").is_some())
            .unwrap_or(false)
    };
    probe(dir.join(UNET_CONFIG)) || probe(dir.join("unet").join(UNET_CONFIG))
}

/// Resolve a model folder or a pipeline folder (with `unet/` and `scheduler/`).
pub fn layout(dir: &Path) -> Result<DiffusersLayout, String> {
    let unet_dir = if dir.join(UNET_CONFIG).is_file() {
        dir.to_path_buf()
    } else if dir.join("unet").join(UNET_CONFIG).is_file() {
        dir.join("unet")
    } else {
        return Err(format!("{}: no {UNET_CONFIG}", dir.display()));
    };
    let weights = unet_dir.join(UNET_WEIGHTS);
    if !weights.is_file() {
        let bin = unet_dir.join("diffusion_pytorch_model.bin");
        return Err(if bin.is_file() {
            format!(
                "{}: PyTorch pickle weights are not read (save with safe_serialization=True to get {UNET_WEIGHTS})",
                bin.display()
            )
        } else {
            format!("{}: missing (diffusers weights file)", weights.display())
        });
    }
    let candidates = [
        unet_dir.join(SCHEDULER_CONFIG),
        dir.join(SCHEDULER_CONFIG),
        dir.join("scheduler").join(SCHEDULER_CONFIG),
        unet_dir
            .parent()
            .map(|p| p.join("scheduler").join(SCHEDULER_CONFIG))
            .unwrap_or_default(),
    ];
    let scheduler = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "{}: no {SCHEDULER_CONFIG} beside the model or in a sibling scheduler/ folder",
                dir.display()
            )
        })?;
    Ok(DiffusersLayout {
        config: unet_dir.join(UNET_CONFIG),
        weights,
        scheduler,
    })
}

/// Read a JSON object file.
pub fn read_object(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{}: not a JSON object", path.display())),
        Err(e) => Err(format!("{}: invalid JSON: {e}", path.display())),
    }
}

/// Field access with diffusers defaults and typed, named errors.
pub(crate) struct Fields<'a> {
    pub(crate) what: &'static str,
    pub(crate) map: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub(crate) fn get(&self, k: &str) -> Option<&Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }
    pub(crate) fn bad(&self, k: &str, want: &str) -> String {
        format!(
            "{} option `{k}` = {} is not {want}",
            self.what,
            self.map.get(k).cloned().unwrap_or(Value::Null)
        )
    }
    pub(crate) fn usize_or(&self, k: &str, d: usize) -> Result<usize, String> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.bad(k, "a non-negative integer")),
        }
    }
    pub(crate) fn opt_usize(&self, k: &str) -> Result<Option<usize>, String> {
        self.get(k)
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| self.bad(k, "a non-negative integer or null"))
            })
            .transpose()
    }
    pub(crate) fn f64_or(&self, k: &str, d: f64) -> Result<f64, String> {
        match self.get(k) {
            None => Ok(d),
            Some(v) => v.as_f64().ok_or_else(|| self.bad(k, "a number")),
        }
    }
    /// A boolean; an explicit null is Python's falsy None, as diffusers passes it through.
    pub(crate) fn bool_or(&self, k: &str, d: bool) -> Result<bool, String> {
        match self.get(k) {
            None if self.map.contains_key(k) => Ok(false),
            None => Ok(d),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(k, "true or false")),
        }
    }
    pub(crate) fn str_or(&self, k: &str, d: &str) -> Result<String, String> {
        match self.get(k) {
            None => Ok(d.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.bad(k, "a string")),
        }
    }
    pub(crate) fn strings(&self, k: &str, d: &[&str]) -> Result<Vec<String>, String> {
        match self.get(k) {
            None => Ok(d.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(k, "a list of strings")),
            Some(_) => Err(self.bad(k, "a list of strings")),
        }
    }
    pub(crate) fn usizes(&self, k: &str, d: &[usize]) -> Result<Vec<usize>, String> {
        match self.get(k) {
            None => Ok(d.to_vec()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(k, "a list of integers")),
            Some(_) => Err(self.bad(k, "a list of integers")),
        }
    }
    /// Refuse a value other than the ones flashctl implements.
    pub(crate) fn require(
        &self,
        k: &str,
        allowed: &[&str],
        default: &str,
    ) -> Result<String, String> {
        let v = self.str_or(k, default)?;
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(format!(
                "unsupported {} option `{k}` = \"{v}\" (flashctl supports: {})",
                self.what,
                allowed.join(", ")
            ))
        }
    }
    /// `sample_size`: an integer, or a square [h, w] pair (flashctl UNets are square).
    pub(crate) fn sample_size(&self) -> Result<usize, String> {
        match self.get("sample_size") {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] && a[0].is_u64() => {
                Ok(a[0].as_u64().unwrap() as usize)
            }
            Some(Value::Array(_)) => {
                Err(self.bad("sample_size", "square (flashctl UNets are square)"))
            }
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.bad("sample_size", "an integer")),
            None => Err(format!(
                "{} option `sample_size` is missing or null (flashctl needs the sample size)",
                self.what
            )),
        }
    }
    /// `down_block_types` / `up_block_types` (or their defaults), every entry one of `ok`.
    pub(crate) fn block_types(
        &self,
        defaults: [&[&str]; 2],
        ok: [&[&str]; 2],
    ) -> Result<[Vec<String>; 2], String> {
        let mut out = [vec![], vec![]];
        for (i, k) in ["down_block_types", "up_block_types"]
            .into_iter()
            .enumerate()
        {
            let list = self.strings(k, defaults[i])?;
            if let Some(bad) = list.iter().find(|t| !ok[i].contains(&t.as_str())) {
                return Err(format!(
                    "unsupported {} option `{k}` entry \"{bad}\" (flashctl supports: {})",
                    self.what,
                    ok[i].join(", ")
                ));
            }
            out[i] = list;
        }
        Ok(out)
    }
    /// Refuse any key outside `known` (keys starting with `_` are diffusers bookkeeping).
    pub(crate) fn only_known(&self, known: &[&str]) -> Result<(), String> {
        for (k, v) in self.map {
            if !k.starts_with('_') && !known.contains(&k.as_str()) {
                return Err(format!(
                    "unsupported {} option `{k}` = {v} (not implemented by flashctl)",
                    self.what
                ));
            }
        }
        Ok(())
    }
}

/// diffusers `UNet2DModel.__init__` keyword arguments (diffusers 0.42), every one handled below.
const UNET_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

/// Map a diffusers `UNet2DModel` config onto [`UnetConfig`], refusing what flashctl cannot run.
pub fn parse_unet_config(map: &Map<String, Value>) -> Result<UnetConfig, String> {
    let f = Fields {
        what: "UNet2DModel",
        map,
    };
    let class = map.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if !class.is_empty() && class != "UNet2DModel" {
        return Err(format!(
            "unsupported model class `_class_name` = \"{class}\" (flashctl reads UNet2DModel)"
        ));
    }
    f.only_known(UNET_KEYS)?;
    f.require("time_embedding_type", &["positional"], "positional")?;
    if map.get("mid_block_type").is_some_and(Value::is_null) {
        return Err(
            "unsupported UNet2DModel option `mid_block_type` = null (a UNet without a mid block)"
                .into(),
        );
    }
    f.require("mid_block_type", &["UNetMidBlock2D"], "UNetMidBlock2D")?;
    f.require("downsample_type", &["conv"], "conv")?;
    f.require("upsample_type", &["conv"], "conv")?;
    f.require("act_fn", &["silu", "swish"], "silu")?;
    f.require(
        "resnet_time_scale_shift",
        &["default", "scale_shift"],
        "default",
    )?;
    if let Some(v) = f.get("class_embed_type") {
        return Err(format!(
            "unsupported UNet2DModel option `class_embed_type` = {v} (flashctl supports null: a class embedding table from num_class_embeds)"
        ));
    }
    if let Some(v) = f.get("num_train_timesteps") {
        return Err(format!(
            "unsupported UNet2DModel option `num_train_timesteps` = {v} (only used with fourier/learned time embeddings)"
        ));
    }
    // dropout is the identity at inference and distillation runs the teacher without it
    f.f64_or("dropout", 0.0)?;
    let sample_size = f.sample_size()?;
    let [down, up] = f.block_types(
        [
            &[
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ],
            &[
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ],
        ],
        [
            &["DownBlock2D", "AttnDownBlock2D"],
            &["UpBlock2D", "AttnUpBlock2D"],
        ],
    )?;
    let norm_num_groups = match f.get("norm_num_groups") {
        None if map.contains_key("norm_num_groups") => {
            return Err("unsupported UNet2DModel option `norm_num_groups` = null (set the group count explicitly)".into())
        }
        _ => f.usize_or("norm_num_groups", 32)?,
    };
    if norm_num_groups == 0 {
        return Err(f.bad("norm_num_groups", "positive"));
    }
    let attention_head_dim = if map.contains_key("attention_head_dim") {
        f.opt_usize("attention_head_dim")?
    } else {
        Some(8)
    };
    let cfg = UnetConfig {
        sample_size,
        in_channels: f.usize_or("in_channels", 3)?,
        out_channels: f.usize_or("out_channels", 3)?,
        center_input_sample: f.bool_or("center_input_sample", false)?,
        flip_sin_to_cos: f.bool_or("flip_sin_to_cos", true)?,
        freq_shift: f.f64_or("freq_shift", 0.0)? as f32,
        down_block_types: down,
        up_block_types: up,
        block_out_channels: f.usizes("block_out_channels", &[224, 448, 672, 896])?,
        layers_per_block: f.usize_or("layers_per_block", 2)?,
        mid_block_scale_factor: f.f64_or("mid_block_scale_factor", 1.0)? as f32,
        downsample_padding: f.usize_or("downsample_padding", 1)?,
        norm_num_groups,
        norm_eps: f.f64_or("norm_eps", 1e-5)? as f32,
        attention_head_dim,
        resnet_time_scale_shift: f.str_or("resnet_time_scale_shift", "default")?,
        num_class_embeds: f.opt_usize("num_class_embeds")?,
        add_attention: f.bool_or("add_attention", true)?,
        time_embedding_dim: f.opt_usize("time_embedding_dim")?,
        attn_norm_num_groups: f.opt_usize("attn_norm_num_groups")?,
        cross_attention: None,
    };
    if cfg.downsample_padding > 1 {
        return Err(f.bad("downsample_padding", "0 or 1"));
    }
    cfg.validate()
        .map_err(|e| format!("UNet2DModel config: {e}"))?;
    Ok(cfg)
}

/// diffusers `UNet2DConditionModel.__init__` keyword arguments (diffusers 0.42), every one
/// handled below: used, checked to be the default flashctl implements, or refused by name.
const UNET_COND_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "dropout",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "reverse_transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "dual_cross_attention",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "resnet_skip_time_act",
    "resnet_out_scale_factor",
    "time_embedding_type",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "time_cond_proj_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    "projection_class_embeddings_input_dim",
    "attention_type",
    "class_embeddings_concat",
    "mid_block_only_cross_attention",
    "cross_attention_norm",
    "addition_embed_type_num_heads",
];

/// An int for every level, or a list with one per level.
fn per_level(f: &Fields, k: &str, levels: usize, default: usize) -> Result<Vec<usize>, String> {
    match f.get(k) {
        None => Ok(vec![default; levels]),
        Some(Value::Array(_)) => {
            let v = f.usizes(k, &[])?;
            if v.len() != levels {
                return Err(f.bad(k, &format!("one value per level ({levels})")));
            }
            Ok(v)
        }
        Some(v) => v
            .as_u64()
            .map(|x| vec![x as usize; levels])
            .ok_or_else(|| f.bad(k, "an integer or a list of integers")),
    }
}

/// Map a diffusers `UNet2DConditionModel` config (SD 1.x/2.x layouts) onto [`UnetConfig`] with
/// its cross-attention part, refusing what flashctl cannot run.
pub fn parse_unet_cond_config(map: &Map<String, Value>) -> Result<UnetConfig, String> {
    let f = Fields {
        what: "UNet2DConditionModel",
        map,
    };
    f.only_known(UNET_COND_KEYS)?;
    // options whose non-default values change the network and are not implemented
    for k in [
        "encoder_hid_dim",
        "encoder_hid_dim_type",
        "class_embed_type",
        "addition_embed_type",
        "addition_time_embed_dim",
        "reverse_transformer_layers_per_block",
        "time_embedding_act_fn",
        "timestep_post_act",
        "projection_class_embeddings_input_dim",
        "mid_block_only_cross_attention",
        "cross_attention_norm",
    ] {
        if let Some(v) = f.get(k) {
            return Err(format!(
                "unsupported UNet2DConditionModel option `{k}` = {v} (flashctl supports null)"
            ));
        }
    }
    for k in [
        "dual_cross_attention",
        "resnet_skip_time_act",
        "class_embeddings_concat",
        "only_cross_attention",
    ] {
        if f.get(k).is_some_and(|v| v != &Value::Bool(false)) {
            return Err(format!(
                "unsupported UNet2DConditionModel option `{k}` = {} (flashctl supports false)",
                f.get(k).unwrap()
            ));
        }
    }
    f.require("time_embedding_type", &["positional"], "positional")?;
    f.require("attention_type", &["default"], "default")?;
    f.require(
        "mid_block_type",
        &["UNetMidBlock2DCrossAttn"],
        "UNetMidBlock2DCrossAttn",
    )?;
    f.require("act_fn", &["silu", "swish"], "silu")?;
    f.require(
        "resnet_time_scale_shift",
        &["default", "scale_shift"],
        "default",
    )?;
    for k in ["conv_in_kernel", "conv_out_kernel"] {
        if f.usize_or(k, 3)? != 3 {
            return Err(f.bad(k, "3 (flashctl supports 3)"));
        }
    }
    if f.f64_or("resnet_out_scale_factor", 1.0)? != 1.0 {
        return Err(f.bad("resnet_out_scale_factor", "1.0 (flashctl supports 1.0)"));
    }
    f.f64_or("dropout", 0.0)?;
    let sample_size = f.sample_size()?;
    let [down, up] = f.block_types(
        [
            &[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
            &[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ],
        ],
        [
            &["DownBlock2D", "CrossAttnDownBlock2D"],
            &["UpBlock2D", "CrossAttnUpBlock2D"],
        ],
    )?;
    let boc = f.usizes("block_out_channels", &[320, 640, 1280, 1280])?;
    let levels = boc.len();
    let cross_attention_dim = match f.get("cross_attention_dim") {
        Some(Value::Array(_)) => {
            let v = f.usizes("cross_attention_dim", &[])?;
            match v.first() {
                Some(&d) if v.iter().all(|&x| x == d) => d,
                _ => return Err(f.bad("cross_attention_dim", "one width for every level")),
            }
        }
        _ => f.usize_or("cross_attention_dim", 1280)?,
    };
    // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` (the
    // historical naming: SD configs' attention_head_dim is the head count)
    let heads_key = if f.get("num_attention_heads").is_some() {
        "num_attention_heads"
    } else {
        "attention_head_dim"
    };
    let heads = per_level(&f, heads_key, levels, 8)?;
    let transformer_layers = per_level(&f, "transformer_layers_per_block", levels, 1)?;
    let norm_num_groups = f.usize_or("norm_num_groups", 32)?;
    if norm_num_groups == 0 {
        return Err(f.bad("norm_num_groups", "positive"));
    }
    let cfg = UnetConfig {
        sample_size,
        in_channels: f.usize_or("in_channels", 4)?,
        out_channels: f.usize_or("out_channels", 4)?,
        center_input_sample: f.bool_or("center_input_sample", false)?,
        flip_sin_to_cos: f.bool_or("flip_sin_to_cos", true)?,
        freq_shift: f.f64_or("freq_shift", 0.0)? as f32,
        down_block_types: down,
        up_block_types: up,
        block_out_channels: boc,
        layers_per_block: f.usize_or("layers_per_block", 2)?,
        mid_block_scale_factor: f.f64_or("mid_block_scale_factor", 1.0)? as f32,
        downsample_padding: f.usize_or("downsample_padding", 1)?,
        norm_num_groups,
        norm_eps: f.f64_or("norm_eps", 1e-5)? as f32,
        attention_head_dim: None,
        resnet_time_scale_shift: f.str_or("resnet_time_scale_shift", "default")?,
        num_class_embeds: f.opt_usize("num_class_embeds")?,
        add_attention: true,
        time_embedding_dim: f.opt_usize("time_embedding_dim")?,
        attn_norm_num_groups: None,
        cross_attention: Some(Box::new(crate::models::unet::CrossAttentionConfig {
            cross_attention_dim,
            heads,
            transformer_layers,
            use_linear_projection: f.bool_or("use_linear_projection", false)?,
            upcast_attention: f.bool_or("upcast_attention", false)?,
            time_cond_proj_dim: f.opt_usize("time_cond_proj_dim")?,
        })),
    };
    if cfg.downsample_padding > 1 {
        return Err(f.bad("downsample_padding", "0 or 1"));
    }
    cfg.validate()
        .map_err(|e| format!("UNet2DConditionModel config: {e}"))?;
    Ok(cfg)
}

/// `DDPMScheduler` and `DDIMScheduler` fields (diffusers 0.42), every one handled below.
const SCHEDULER_KEYS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "variance_type",
    "clip_sample",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "steps_offset",
    "rescale_betas_zero_snr",
    "set_alpha_to_one",
];

/// Map a diffusers DDPM/DDIM scheduler config onto [`ScheduleConfig`] (flashctl samples with
/// DDIM, eta 0, as `DDIMScheduler.from_config` of either would).
pub fn parse_scheduler_config(map: &Map<String, Value>) -> Result<ScheduleConfig, String> {
    let class = map.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if !class.is_empty() && class != "DDPMScheduler" && class != "DDIMScheduler" {
        return Err(format!(
            "unsupported scheduler `_class_name` = \"{class}\" (flashctl reads DDPMScheduler and DDIMScheduler configs)"
        ));
    }
    let f = Fields {
        what: "scheduler",
        map,
    };
    f.only_known(SCHEDULER_KEYS)?;
    if let Some(v) = f.get("trained_betas") {
        return Err(format!(
            "unsupported scheduler option `trained_betas` = {v} (flashctl computes betas from beta_schedule)"
        ));
    }
    if f.bool_or("thresholding", false)? {
        return Err(
            "unsupported scheduler option `thresholding` = true (dynamic thresholding is not implemented)"
                .into(),
        );
    }
    // variance_type only shapes DDPM's stochastic step, except the learned variants whose model
    // outputs twice the channels
    f.require(
        "variance_type",
        &[
            "fixed_small",
            "fixed_small_log",
            "fixed_large",
            "fixed_large_log",
        ],
        "fixed_small",
    )?;
    f.f64_or("dynamic_thresholding_ratio", 0.995)?;
    f.f64_or("sample_max_value", 1.0)?;
    let enum_field = |k: &str, default: &str, allowed: &[&str]| -> Result<Value, String> {
        Ok(Value::String(f.require(k, allowed, default)?))
    };
    let cfg = serde_json::json!({
        "num_train_timesteps": f.usize_or("num_train_timesteps", 1000)?,
        "beta_start": f.f64_or("beta_start", 1e-4)?,
        "beta_end": f.f64_or("beta_end", 0.02)?,
        "beta_schedule": enum_field("beta_schedule", "linear", &["linear", "scaled_linear", "squaredcos_cap_v2"])?,
        "rescale_betas_zero_snr": f.bool_or("rescale_betas_zero_snr", false)?,
        "prediction_type": enum_field("prediction_type", "epsilon", &["epsilon", "v_prediction", "sample"])?,
        "timestep_spacing": enum_field("timestep_spacing", "leading", &["leading", "trailing", "linspace"])?,
        "steps_offset": f.usize_or("steps_offset", 0)?,
        "set_alpha_to_one": f.bool_or("set_alpha_to_one", true)?,
        "clip_sample": f.bool_or("clip_sample", true)?,
        "clip_sample_range": f.f64_or("clip_sample_range", 1.0)?,
    });
    let cfg: ScheduleConfig = serde_json::from_value(cfg).map_err(|e| e.to_string())?;
    if cfg.num_train_timesteps < 2 {
        return Err(f.bad("num_train_timesteps", "at least 2"));
    }
    Ok(cfg)
}

/// Attention weights saved by diffusers before 0.15 (`query`/`key`/`value`/`proj_attn`) under
/// today's names, as diffusers itself renames them on load.
pub fn rename_legacy_attention_keys(
    weights: std::collections::HashMap<String, candle_core::Tensor>,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    weights
        .into_iter()
        .map(|(k, v)| {
            let mut name = k.clone();
            if k.contains(".attentions.") {
                for (old, new) in [
                    (".query.", ".to_q."),
                    (".key.", ".to_k."),
                    (".value.", ".to_v."),
                    (".proj_attn.", ".to_out.0."),
                ] {
                    name = name.replace(old, new);
                }
            }
            (name, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_and_unsupported_options_are_refused_by_name() {
        let base = serde_json::json!({"_class_name": "UNet2DModel", "sample_size": 16,
            "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8});
        assert!(parse_unet_config(&obj(base.clone())).is_ok());
        for (k, v, needle) in [
            (
                "time_embedding_type",
                serde_json::json!("fourier"),
                "`time_embedding_type` = \"fourier\"",
            ),
            (
                "downsample_type",
                serde_json::json!("resnet"),
                "`downsample_type` = \"resnet\"",
            ),
            (
                "class_embed_type",
                serde_json::json!("timestep"),
                "`class_embed_type`",
            ),
            ("frobnicate", serde_json::json!(3), "`frobnicate` = 3"),
            (
                "down_block_types",
                serde_json::json!(["DownBlock2D", "SkipDownBlock2D"]),
                "SkipDownBlock2D",
            ),
            ("act_fn", serde_json::json!("mish"), "`act_fn` = \"mish\""),
        ] {
            let mut m = obj(base.clone());
            m.insert(k.into(), v);
            let e = parse_unet_config(&m).unwrap_err();
            assert!(e.contains(needle), "{k}: {e}");
        }
    }

    #[test]
    fn missing_unet_fields_take_diffusers_defaults() {
        let m = obj(serde_json::json!({"sample_size": 32}));
        let c = parse_unet_config(&m).unwrap();
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        assert_eq!(c.attention_head_dim, Some(8));
        assert_eq!(
            (c.in_channels, c.layers_per_block, c.norm_num_groups),
            (3, 2, 32)
        );
    }

    #[test]
    fn scheduler_defaults_and_refusals() {
        let ddpm = obj(serde_json::json!({"_class_name": "DDPMScheduler"}));
        let c = parse_scheduler_config(&ddpm).unwrap();
        assert!(c.clip_sample && c.set_alpha_to_one);
        assert_eq!(c.steps_offset, 0);
        for (k, v) in [
            ("thresholding", serde_json::json!(true)),
            ("variance_type", serde_json::json!("learned_range")),
            ("beta_schedule", serde_json::json!("sigmoid")),
            ("trained_betas", serde_json::json!([0.1, 0.2])),
        ] {
            let mut m = ddpm.clone();
            m.insert(k.into(), v);
            let e = parse_scheduler_config(&m).unwrap_err();
            assert!(e.contains(k), "{k}: {e}");
        }
        let pndm = obj(serde_json::json!({"_class_name": "PNDMScheduler"}));
        assert!(parse_scheduler_config(&pndm)
            .unwrap_err()
            .contains("PNDMScheduler"));
    }
}
