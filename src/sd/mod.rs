//! Stable-Diffusion-family pipeline folders (`model_index.json`: UNet2DConditionModel,
//! AutoencoderKL, CLIPTextModel, CLIP tokenizer, scheduler), issue "latent text-to-image
//! teachers". So far: the tokenizer ([`clip_tokenizer`]) and the text encoder
//! ([`text_encoder`], the network itself in `models::clip_text`).

pub mod clip_tokenizer;
pub mod text_encoder;
