//! MLP denoiser for low-dimensional data: sinusoidal time features + optional class embedding,
//! concatenated with the input, then SiLU hidden layers.

use super::layers::{embedding, linear};
use flashctl_graphs::{Ops, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    pub data_dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub time_dim: usize,
    #[serde(default)]
    pub num_classes: Option<usize>,
}

pub fn forward<O: Ops>(
    c: &MlpConfig,
    o: &O,
    x: &O::T,
    t: &O::T,
    class_labels: Option<&O::T>,
) -> Result<O::T> {
    // 1. time features -> hidden-sized embedding
    let temb = o.scoped("time_proj", || {
        o.timestep_embedding(t, c.time_dim, true, 0.0)
    })?;
    let temb = linear(o, "time_embedding.linear_1", &temb, c.time_dim, c.hidden)?;
    let temb = o.silu(&temb)?;
    let mut temb = linear(o, "time_embedding.linear_2", &temb, c.hidden, c.hidden)?;
    // 2. optional class embedding added to the time embedding (as diffusers does)
    if let (Some(n), Some(y)) = (c.num_classes, class_labels) {
        let cemb = embedding(o, "class_embedding", y, n, c.hidden)?;
        temb = o.add(&temb, &cemb)?;
    }
    // 3. input projection + time embedding, then residual SiLU layers
    let mut h = linear(o, "input", x, c.data_dim, c.hidden)?;
    h = o.add(&h, &temb)?;
    for i in 0..c.layers {
        let p = format!("layers.{i}");
        let a = o.silu(&h)?;
        let a = linear(o, &p, &a, c.hidden, c.hidden)?;
        h = o.add(&h, &a)?;
    }
    let h = o.silu(&h)?;
    linear(o, "output", &h, c.hidden, c.data_dim)
}
