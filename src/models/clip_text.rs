//! transformers' `CLIPTextModel` (the text encoder of SD 1.x/2.x pipelines), written once
//! against the op trait: token + position embeddings, pre-norm transformer layers with causal
//! self-attention and a quick_gelu / gelu MLP, final layer norm. Its output is
//! `last_hidden_state` [B, S, hidden], what `StableDiffusionPipeline` passes to the UNet as
//! `encoder_hidden_states`. Parameter names are transformers' (`embeddings.*`, `encoder.layers.N.*`,
//! `final_layer_norm.*`; checkpoints written by transformers 4 prefix them with `text_model.`,
//! which the loader strips).

use super::layers::{embedding, join, layer_norm, linear};
use flashctl_graphs::{GraphError, Ops, Result, UnaryOp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// x * sigmoid(1.702 x) (SD 1.x, OpenAI CLIP)
    QuickGelu,
    /// x/2 (1 + erf(x / sqrt 2)) (SD 2.x, OpenCLIP)
    Gelu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: ClipActivation,
}

impl ClipTextConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_hidden_layers", self.num_hidden_layers),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("CLIPTextModel option `{k}` must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "CLIPTextModel hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// Additive causal mask [S, S]: 0 where a token may attend (itself and earlier ones), the
/// float minimum above the diagonal (what transformers adds).
fn causal_mask(s: usize) -> Vec<f32> {
    let mut m = vec![0f32; s * s];
    for i in 0..s {
        for j in i + 1..s {
            m[i * s + j] = f32::MIN;
        }
    }
    m
}

/// The MLP's activation, as transformers' ACT2FN computes it.
pub fn activation<O: Ops>(o: &O, act: ClipActivation, x: &O::T) -> Result<O::T> {
    match act {
        ClipActivation::QuickGelu => {
            let s = o.unary(UnaryOp::Sigmoid, &o.scale(x, 1.702)?)?;
            o.mul(x, &s)
        }
        ClipActivation::Gelu => {
            let e = o.unary(UnaryOp::Erf, &o.scale(x, std::f32::consts::FRAC_1_SQRT_2)?)?;
            o.mul(&o.scale(x, 0.5)?, &o.affine(&e, 1.0, 1.0)?)
        }
    }
}

/// `input_ids` [B, S] int64 (S = max_position_embeddings, as SD pipelines pad) ->
/// `last_hidden_state` [B, S, hidden_size].
pub fn forward<O: Ops>(c: &ClipTextConfig, o: &O, input_ids: &O::T) -> Result<O::T> {
    c.validate().map_err(GraphError::Invalid)?;
    let s = match o.shape(input_ids).as_slice() {
        [_, s] => s.known(),
        other => {
            return Err(GraphError::Invalid(format!(
                "CLIPTextModel input_ids must be [batch, {}], got rank {}",
                c.max_position_embeddings,
                other.len()
            )))
        }
    };
    let seq = c.max_position_embeddings;
    if s != Some(seq) {
        return Err(GraphError::Invalid(format!(
            "CLIPTextModel input_ids must have {seq} tokens per prompt (padded as the pipeline \
             pads), got {s:?}"
        )));
    }
    let d = c.hidden_size;
    let heads = c.num_attention_heads;
    let head_dim = d / heads;
    let eps = c.layer_norm_eps;
    let tokens = embedding(o, "embeddings.token_embedding", input_ids, c.vocab_size, d)?;
    let positions = o.param(
        "embeddings.position_embedding.weight",
        &[seq, d],
        flashctl_graphs::ops::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let mut h = o.add(&tokens, &positions)?;
    let mask = o.constant(&causal_mask(seq), &[1, 1, seq, seq])?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    for i in 0..c.num_hidden_layers {
        let p = format!("encoder.layers.{i}");
        h = o.scoped(&p, || -> Result<O::T> {
            // self-attention, pre-norm, causal
            let x = layer_norm(o, &join(&p, "layer_norm1"), &h, d, eps)?;
            let a = join(&p, "self_attn");
            let split = |name: &str| -> Result<O::T> {
                let y = linear(o, &join(&a, name), &x, d, d)?;
                let y = o.reshape(&y, &[0, seq as i64, heads as i64, head_dim as i64])?;
                o.transpose(&y, &[0, 2, 1, 3])
            };
            let (q, k, v) = (split("q_proj")?, split("k_proj")?, split("v_proj")?);
            let kt = o.transpose(&k, &[0, 1, 3, 2])?;
            let scores = o.add(&o.scale(&o.matmul(&q, &kt)?, scale)?, &mask)?;
            let probs = o.softmax_last_dim(&scores)?;
            let y = o.transpose(&o.matmul(&probs, &v)?, &[0, 2, 1, 3])?;
            let y = o.reshape(&y, &[0, seq as i64, d as i64])?;
            let y = linear(o, &join(&a, "out_proj"), &y, d, d)?;
            let h = o.add(&h, &y)?;
            // MLP, pre-norm
            let x = layer_norm(o, &join(&p, "layer_norm2"), &h, d, eps)?;
            let x = linear(o, &join(&p, "mlp.fc1"), &x, d, c.intermediate_size)?;
            let x = activation(o, c.hidden_act, &x)?;
            let x = linear(o, &join(&p, "mlp.fc2"), &x, c.intermediate_size, d)?;
            o.add(&h, &x)
        })?;
    }
    layer_norm(o, "final_layer_norm", &h, d, eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_later_tokens_only() {
        let m = causal_mask(3);
        assert_eq!(&m[0..3], &[0.0, f32::MIN, f32::MIN]);
        assert_eq!(&m[3..6], &[0.0, 0.0, f32::MIN]);
        assert_eq!(&m[6..9], &[0.0, 0.0, 0.0]);
    }
}
