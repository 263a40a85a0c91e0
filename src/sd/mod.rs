//! Stable-Diffusion-family pipeline folders (`model_index.json`: UNet2DConditionModel,
//! AutoencoderKL, CLIPTextModel, CLIP tokenizer, scheduler), issue "latent text-to-image
//! teachers". So far: the tokenizer ([`clip_tokenizer`]), the text encoder ([`text_encoder`],
//! the network itself in `models::clip_text`); the UNet2DConditionModel is `models::unet` with
//! its cross-attention part (config: `diffusers::parse_unet_cond_config`); the VAE is
//! `models::vae` (config: [`vae`]).

pub mod clip_tokenizer;
pub mod export;
pub mod pipeline;
pub mod run;
pub mod text_encoder;
pub mod vae;
