//! Networks written once against the op trait: denoisers (an MLP for 2-D data, a UNet that
//! mirrors diffusers' `UNet2DModel` in structure and parameter names) and the KDM one-step
//! generator built from the same layers.

pub mod clip_text;
pub mod kdm;
pub mod layers;
pub mod mlp;
pub mod unet;
pub mod vae;

use flashctl_graphs::{Ops, Result};
use serde::{Deserialize, Serialize};

pub use kdm::KdmConfig;
pub use mlp::MlpConfig;
pub use unet::UnetConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Denoiser {
    Mlp(MlpConfig),
    Unet(UnetConfig),
    /// Not a denoiser: a one-step generator x_T -> x0 (t is ignored). Its model directory runs
    /// the `one_step` sampler, a single call whose output is the sample.
    Kdm(Box<KdmConfig>),
}

impl Denoiser {
    /// x [B, ...data shape], t [B] or [1] float timesteps, class labels [B] int64.
    pub fn forward<O: Ops>(
        &self,
        o: &O,
        x: &O::T,
        t: &O::T,
        class_labels: Option<&O::T>,
    ) -> Result<O::T> {
        match self {
            Denoiser::Mlp(c) => mlp::forward(c, o, x, t, class_labels),
            Denoiser::Unet(c) => unet::forward(c, o, x, t, class_labels),
            Denoiser::Kdm(c) => kdm::forward(c, o, x, class_labels),
        }
    }

    pub fn num_classes(&self) -> Option<usize> {
        match self {
            Denoiser::Mlp(c) => c.num_classes,
            Denoiser::Unet(c) => c.num_class_embeds,
            Denoiser::Kdm(c) => c.num_classes,
        }
    }

    /// A one-step generator rather than a denoiser.
    pub fn is_generator(&self) -> bool {
        matches!(self, Denoiser::Kdm(_))
    }

    /// Shape of one sample (without batch).
    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Denoiser::Mlp(c) => vec![c.data_dim],
            Denoiser::Unet(c) => vec![c.in_channels, c.sample_size, c.sample_size],
            Denoiser::Kdm(c) => c.sample_shape.clone(),
        }
    }
}
