//! A pipeline's `text_encoder/` folder (transformers `CLIPTextModel`: `config.json` +
//! `model.safetensors`): strict config mapping and the eager run of `models::clip_text`.

use crate::models::clip_text::{self, ClipActivation, ClipTextConfig};
use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_graphs::EagerOps;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

pub const TEXT_ENCODER_WEIGHTS: &str = "model.safetensors";

fn usize_field(map: &Map<String, Value>, key: &str) -> Result<usize, String> {
    match map.get(key) {
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("CLIPTextModel option `{key}` = {v} is not a count")),
        None => Err(format!("CLIPTextModel config has no `{key}`")),
    }
}

/// transformers' CLIPTextConfig -> [`ClipTextConfig`]; anything that would change the
/// computation and is not supported is refused by name.
pub fn parse_config(map: &Map<String, Value>) -> Result<ClipTextConfig, String> {
    if let Some(archs) = map.get("architectures").and_then(|v| v.as_array()) {
        for a in archs {
            if a.as_str() != Some("CLIPTextModel") {
                return Err(format!(
                    "unsupported text encoder class {a} (supported: CLIPTextModel)"
                ));
            }
        }
    }
    match map.get("model_type").and_then(|v| v.as_str()) {
        None | Some("clip_text_model") => {}
        Some(m) => return Err(format!("unsupported text encoder model_type `{m}`")),
    }
    let hidden_act = match map.get("hidden_act").and_then(|v| v.as_str()) {
        Some("quick_gelu") | None => ClipActivation::QuickGelu,
        Some("gelu") => ClipActivation::Gelu,
        Some(a) => {
            return Err(format!(
                "unsupported CLIPTextModel option hidden_act `{a}` (supported: quick_gelu, gelu)"
            ))
        }
    };
    let layer_norm_eps =
        match map.get("layer_norm_eps") {
            None => 1e-5,
            Some(v) => v.as_f64().filter(|e| *e > 0.0).ok_or_else(|| {
                format!("CLIPTextModel option `layer_norm_eps` = {v} is not positive")
            })? as f32,
        };
    let c = ClipTextConfig {
        vocab_size: usize_field(map, "vocab_size")?,
        hidden_size: usize_field(map, "hidden_size")?,
        intermediate_size: usize_field(map, "intermediate_size")?,
        num_attention_heads: usize_field(map, "num_attention_heads")?,
        num_hidden_layers: usize_field(map, "num_hidden_layers")?,
        max_position_embeddings: usize_field(map, "max_position_embeddings")?,
        layer_norm_eps,
        hidden_act,
    };
    c.validate()?;
    Ok(c)
}

/// A loaded text encoder: its config and weights (names without transformers 4's `text_model.`).
pub struct TextEncoder {
    pub config: ClipTextConfig,
    weights: HashMap<String, Tensor>,
    device: Device,
}

impl TextEncoder {
    /// `dir`: a `text_encoder/` folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let map = crate::diffusers::read_object(&config_path).map_err(|e| anyhow!(e))?;
        let config = parse_config(&map).map_err(|e| anyhow!("{}: {e}", config_path.display()))?;
        let tensors = crate::checkpoint::load_tensors(&dir.join(TEXT_ENCODER_WEIGHTS), device)?;
        let weights = tensors
            .into_iter()
            .map(|(k, v)| {
                let k = k
                    .strip_prefix("text_model.")
                    .map(str::to_string)
                    .unwrap_or(k);
                Ok((k, v.to_dtype(DType::F32)?))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self {
            config,
            weights,
            device: device.clone(),
        })
    }

    pub fn weights(&self) -> &HashMap<String, Tensor> {
        &self.weights
    }

    /// `input_ids` [B, max_position_embeddings] int64 -> `last_hidden_state` [B, S, hidden].
    pub fn encode(&self, input_ids: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let ids = input_ids.to_dtype(DType::I64)?;
        let (_, s) = ids
            .dims2()
            .map_err(|_| anyhow!("input_ids must be [batch, {}]", c.max_position_embeddings))?;
        if s != c.max_position_embeddings {
            bail!(
                "input_ids have {s} tokens per prompt; this text encoder takes {} (pad as the \
                 pipeline does)",
                c.max_position_embeddings
            );
        }
        let flat = ids.flatten_all()?.to_vec1::<i64>()?;
        if let Some(bad) = flat.iter().find(|&&i| i < 0 || i as usize >= c.vocab_size) {
            bail!(
                "input_ids: token id {bad} outside the vocabulary (0..{})",
                c.vocab_size
            );
        }
        let vb =
            candle_nn::VarBuilder::from_tensors(self.weights.clone(), DType::F32, &self.device);
        let ops = EagerOps::new(vb);
        clip_text::forward(c, &ops, &ids).map_err(|e| anyhow!("text encoder: {e}"))
    }
}
