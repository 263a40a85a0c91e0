//! A `StableDiffusionPipeline` folder as one teacher: its components loaded with their strict
//! config mappings, and the pipeline's computation written once (eager here, traced by the
//! export): text encoder -> DDIM steps with classifier-free guidance -> VAE decoder -> [0, 1].
//!
//! Parameters of the three networks live under `text_encoder.`, `unet.` and `vae.` in one
//! name space ([`SdPipeline::var_builder`]), so a graph of the whole pipeline stores each
//! weight once.

use super::clip_tokenizer::ClipTokenizer;
use super::text_encoder::TextEncoder;
use crate::models::clip_text::{self, ClipTextConfig};
use crate::models::unet::{forward_conditioned, forward_with_context, UnetConfig};
use crate::models::vae::{self, VaeConfig};
use crate::sampler::{ddim_plan, sample_with, SamplerPlan};
use crate::schedule::ScheduleConfig;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_graphs::{EagerOps, Ops, Prefixed};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The pipeline classes whose folders flashctl reads.
pub const PIPELINE_CLASSES: &[&str] = &["StableDiffusionPipeline"];

/// `model_index.json` present: a diffusers pipeline folder (of any class).
pub fn is_pipeline_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

pub struct SdPipeline {
    pub dir: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextConfig,
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub schedule: ScheduleConfig,
    weights: HashMap<String, Tensor>,
    device: Device,
}

fn component(dir: &Path, name: &str) -> Result<PathBuf> {
    let d = dir.join(name);
    if d.is_dir() {
        Ok(d)
    } else {
        bail!(
            "{}: missing component `{name}/` of the pipeline",
            dir.display()
        )
    }
}

fn prefixed(
    prefix: &str,
    tensors: HashMap<String, Tensor>,
    into: &mut HashMap<String, Tensor>,
) -> Result<()> {
    for (k, v) in tensors {
        into.insert(format!("{prefix}.{k}"), v.to_dtype(DType::F32)?);
    }
    Ok(())
}

impl SdPipeline {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let index_path = dir.join("model_index.json");
        let index = crate::diffusers::read_object(&index_path).map_err(|e| anyhow!(e))?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !PIPELINE_CLASSES.contains(&class) {
            bail!(
                "{}: unsupported pipeline class `{class}` (flashctl reads {})",
                index_path.display(),
                PIPELINE_CLASSES.join(", ")
            );
        }
        let tokenizer = ClipTokenizer::from_dir(&component(dir, "tokenizer")?)?;
        let text = TextEncoder::load(&component(dir, "text_encoder")?, device)?;
        let unet_dir = component(dir, "unet")?;
        let unet_cfg_path = unet_dir.join("config.json");
        let unet = crate::diffusers::read_object(&unet_cfg_path)
            .and_then(|m| crate::diffusers::parse_unet_cond_config(&m))
            .map_err(|e| anyhow!("{}: {e}", unet_cfg_path.display()))?;
        let vae_dir = component(dir, "vae")?;
        let vae_cfg_path = vae_dir.join("config.json");
        let vae = crate::diffusers::read_object(&vae_cfg_path)
            .and_then(|m| super::vae::parse_config(&m))
            .map_err(|e| anyhow!("{}: {e}", vae_cfg_path.display()))?;
        let sched_path = component(dir, "scheduler")?.join("scheduler_config.json");
        let schedule = crate::diffusers::read_object(&sched_path)
            .and_then(|m| crate::diffusers::parse_scheduler_config(&m))
            .map_err(|e| anyhow!("{}: {e}", sched_path.display()))?;
        let cross = unet.cross_attention.as_ref().expect("a conditional UNet");
        if cross.cross_attention_dim != text.config.hidden_size {
            bail!(
                "{}: the UNet's cross_attention_dim {} differs from the text encoder's width {}",
                dir.display(),
                cross.cross_attention_dim,
                text.config.hidden_size
            );
        }
        if unet.in_channels != vae.latent_channels {
            bail!(
                "{}: the UNet takes {} channels, the VAE's latents have {}",
                dir.display(),
                unet.in_channels,
                vae.latent_channels
            );
        }
        let mut weights = HashMap::new();
        prefixed("text_encoder", text.weights().clone(), &mut weights)?;
        let unet_w = crate::checkpoint::load_tensors(
            &unet_dir.join(crate::diffusers::UNET_WEIGHTS),
            device,
        )?;
        prefixed("unet", unet_w, &mut weights)?;
        let vae_w =
            crate::checkpoint::load_tensors(&vae_dir.join(crate::diffusers::UNET_WEIGHTS), device)?;
        prefixed("vae", vae_w, &mut weights)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokenizer,
            text_encoder: text.config.clone(),
            unet,
            vae,
            schedule,
            weights,
            device: device.clone(),
        })
    }

    /// (name, element count) of every weight, names under `text_encoder.`, `unet.`, `vae.`.
    pub fn var_builder_names(&self) -> impl Iterator<Item = (&str, usize)> {
        self.weights
            .iter()
            .map(|(k, t)| (k.as_str(), t.elem_count()))
    }

    /// Parameters of the three networks together.
    pub fn parameter_count(&self) -> usize {
        self.weights.values().map(|t| t.elem_count()).sum()
    }

    /// All three networks' weights under `text_encoder.`, `unet.`, `vae.`.
    pub fn var_builder(&self) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_tensors(self.weights.clone(), DType::F32, &self.device)
    }

    /// Token ids [B, 77] of `prompts`, warning (stderr) about each truncated prompt as diffusers
    /// does.
    pub fn tokenize(&self, prompts: &[String]) -> Result<Tensor> {
        let mut ids = Vec::new();
        for p in prompts {
            let e = self.tokenizer.encode(p)?;
            if e.truncated {
                eprintln!(
                    "warning: the prompt {p:?} is longer than the tokenizer's {} tokens; the rest \
                     was truncated (as diffusers does)",
                    self.tokenizer.max_len
                );
            }
            ids.extend(e.ids);
        }
        Tensor::from_vec(ids, (prompts.len(), self.tokenizer.max_len), &self.device)
            .context("token ids")
    }

    /// Classifier-free guidance runs (a guidance-embedded UNet takes w as an input instead).
    pub fn uses_cfg(&self, guidance: f32) -> bool {
        guidance != 1.0
            && self
                .unet
                .cross_attention
                .as_ref()
                .is_none_or(|x| x.time_cond_proj_dim.is_none())
    }

    /// The DDIM plan of `steps` steps with the pipeline's scheduler.
    pub fn plan(&self, steps: usize) -> Result<SamplerPlan> {
        ddim_plan(&self.schedule, steps).map_err(|e| anyhow!("--steps {steps}: {e}"))
    }

    /// Check `embeds` has the text encoder's shape [B, 77, width].
    pub fn check_embeddings(&self, name: &str, embeds: &Tensor) -> Result<()> {
        let want = [
            self.tokenizer
                .max_len
                .min(self.text_encoder.max_position_embeddings),
            self.text_encoder.hidden_size,
        ];
        match embeds.dims() {
            [_, s, w] if [*s, *w] == want => Ok(()),
            d => bail!(
                "{name}: shape {d:?}, expected [batch, {}, {}] (the text encoder's output)",
                want[0],
                want[1]
            ),
        }
    }

    /// Eager: (latents, image in [0, 1]) from x_T and the prompt (and negative prompt)
    /// embeddings.
    pub fn generate(
        &self,
        x_t: &Tensor,
        cond: &Tensor,
        uncond: Option<&Tensor>,
        guidance: f32,
        steps: usize,
    ) -> Result<(Tensor, Tensor)> {
        self.check_embeddings("prompt_embeds", cond)?;
        if let Some(u) = uncond {
            self.check_embeddings("negative_prompt_embeds", u)?;
        }
        let plan = self.plan(steps)?;
        let ops = EagerOps::new(self.var_builder());
        let latents = guided_latents(&self.unet, &ops, &plan, x_t, cond, uncond, guidance)
            .map_err(|e| anyhow!("{e}"))?;
        let image = decode_image(&self.vae, &ops, &latents).map_err(|e| anyhow!("{e}"))?;
        Ok((latents, image))
    }

    /// Eager text encoder on ids [B, 77].
    pub fn encode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let ops = EagerOps::new(self.var_builder());
        encode_text(&self.text_encoder, &ops, ids).map_err(|e| anyhow!("{e}"))
    }
}

/// The text encoder's `last_hidden_state` (parameters under `text_encoder.`).
pub fn encode_text<O: Ops>(c: &ClipTextConfig, o: &O, ids: &O::T) -> flashctl_graphs::Result<O::T> {
    Prefixed::run(o, "text_encoder", |p| clip_text::forward(c, p, ids))
}

/// diffusers' `get_guidance_scale_embedding(w)` (float32, as torch computes it): sin and cos of
/// `1000 w` at `dim / 2` geometric frequencies, zero-padded to an odd `dim`.
pub fn guidance_scale_embedding(w: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = (10000f32).ln() / (half as f32 - 1.0).max(1.0);
    let w = w * 1000.0;
    let args: Vec<f32> = (0..half).map(|i| w * (i as f32 * -step).exp()).collect();
    let mut out: Vec<f32> = args.iter().map(|a| a.sin()).collect();
    out.extend(args.iter().map(|a| a.cos()));
    out.resize(dim, 0.0);
    out
}

/// `StableDiffusionPipeline`'s denoising loop: the plan's DDIM steps from x_T, each UNet call
/// guided as diffusers guides it, `uncond + w (cond - uncond)` (no guidance when `uncond` is
/// None or w = 1). The two UNet calls share their weights (parameters under `unet.`). A UNet with
/// `time_cond_proj_dim` instead takes the embedding of `w - 1` and runs once per step, no
/// classifier-free guidance (as the pipeline does for such UNets).
pub fn guided_latents<O: Ops>(
    unet: &UnetConfig,
    o: &O,
    plan: &SamplerPlan,
    x_t: &O::T,
    cond: &O::T,
    uncond: Option<&O::T>,
    guidance: f32,
) -> flashctl_graphs::Result<O::T> {
    let cond_dim = unet
        .cross_attention
        .as_ref()
        .and_then(|x| x.time_cond_proj_dim);
    Prefixed::run(o, "unet", |p| {
        if let Some(dim) = cond_dim {
            let emb = p.constant(&guidance_scale_embedding(guidance - 1.0, dim), &[1, dim])?;
            return sample_with(p, plan, x_t, |x_in, t| {
                forward_conditioned(unet, p, x_in, t, None, Some(cond), Some(&emb))
            });
        }
        sample_with(p, plan, x_t, |x_in, t| {
            let text = forward_with_context(unet, p, x_in, t, None, Some(cond))?;
            match uncond {
                Some(u) if guidance != 1.0 => {
                    let base = forward_with_context(unet, p, x_in, t, None, Some(u))?;
                    p.add(&base, &p.scale(&p.sub(&text, &base)?, guidance)?)
                }
                _ => Ok(text),
            }
        })
    })
}

/// `vae.decode(latents / scaling_factor)` post-processed as the pipeline does:
/// `(image / 2 + 0.5).clamp(0, 1)` (parameters under `vae.`).
pub fn decode_image<O: Ops>(c: &VaeConfig, o: &O, latents: &O::T) -> flashctl_graphs::Result<O::T> {
    Prefixed::run(o, "vae", |p| {
        let z = p.scale(latents, 1.0 / c.scaling_factor)?;
        let image = vae::decode(c, p, &z)?;
        p.clamp(&p.affine(&image, 0.5, 0.5)?, 0.0, 1.0)
    })
}
