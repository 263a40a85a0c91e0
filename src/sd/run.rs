//! `teacher run` and `sample` on a pipeline folder: one UNet call on `x`, `t`,
//! `encoder_hidden_states`; and the whole pipeline from prompts (or ids, or embeddings) to
//! `sample` (latents) and `image` ([0, 1]).

use super::pipeline::SdPipeline;
use crate::checkpoint;
use crate::models::unet::forward_with_context;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_graphs::{EagerOps, Prefixed};
use std::collections::HashMap;
use std::path::Path;

/// One UNet2DConditionModel call: `x`, `t` (float or int) and `encoder_hidden_states` from
/// `inputs`, written as `denoiser_out`.
pub fn teacher_run(dir: &Path, inputs: &Path, out: &Path) -> Result<Tensor> {
    let p = SdPipeline::load(dir, &Device::Cpu)?;
    let m = checkpoint::load_tensors(inputs, &Device::Cpu)?;
    let get = |k: &str| {
        m.get(k).ok_or_else(|| {
            anyhow!(
                "{}: no tensor `{k}` (a text-to-image UNet call takes x, t and \
                 encoder_hidden_states)",
                inputs.display()
            )
        })
    };
    let x = get("x")?.to_dtype(DType::F32)?;
    let t = get("t")?.to_dtype(DType::F32)?;
    let ctx = get("encoder_hidden_states")?.to_dtype(DType::F32)?;
    p.check_embeddings("encoder_hidden_states", &ctx)?;
    let want = [p.unet.in_channels, p.unet.sample_size, p.unet.sample_size];
    if x.rank() != 4 || x.dims()[1] != want[0] {
        bail!(
            "{}: x has shape {:?}, expected [batch, {}, h, w]",
            inputs.display(),
            x.dims(),
            want[0]
        );
    }
    let ops = EagerOps::new(p.var_builder());
    let y = Prefixed::run(&ops, "unet", |o| {
        forward_with_context(&p.unet, o, &x, &t, None, Some(&ctx))
    })
    .map_err(|e| anyhow!("UNet call: {e}"))?;
    crate::sample::write_tensor(out, "denoiser_out", &y)?;
    Ok(y)
}

/// What a pipeline samples from.
pub struct PromptInputs<'a> {
    pub prompts: &'a [String],
    pub negative_prompt: Option<&'a str>,
    /// `x_T`/`noise` and `input_ids`/`prompt_embeds` (and the negatives) from a file
    pub inputs: Option<&'a Path>,
    pub seed: u64,
    pub guidance: f32,
    pub steps: Option<usize>,
}

pub struct PipelineSample {
    pub latents: Tensor,
    pub image: Tensor,
    pub steps: usize,
}

/// Prompt embeddings from a file (`*_embeds`, or `*_input_ids` through the text encoder).
fn embeds_from(
    p: &SdPipeline,
    m: &HashMap<String, Tensor>,
    path: &Path,
    prefix: &str,
) -> Result<Option<Tensor>> {
    let (ids_key, emb_key) = if prefix.is_empty() {
        ("input_ids".to_string(), "prompt_embeds".to_string())
    } else {
        (
            format!("{prefix}_input_ids"),
            format!("{prefix}_prompt_embeds"),
        )
    };
    if let Some(e) = m.get(&emb_key) {
        let e = e.to_dtype(DType::F32)?;
        p.check_embeddings(&format!("{}: {emb_key}", path.display()), &e)?;
        return Ok(Some(e));
    }
    match m.get(&ids_key) {
        Some(ids) => Ok(Some(p.encode_ids(&ids.to_dtype(DType::I64)?)?)),
        None => Ok(None),
    }
}

pub fn sample(dir: &Path, o: &PromptInputs) -> Result<PipelineSample> {
    let p = SdPipeline::load(dir, &Device::Cpu)?;
    if !(o.guidance.is_finite() && o.guidance >= 1.0) {
        bail!(
            "--guidance-scale {}: expected a number >= 1 (1 = no guidance)",
            o.guidance
        );
    }
    let steps = o.steps.unwrap_or(super::export::DEFAULT_STEPS);
    let (x_t, cond, file_uncond) = match o.inputs {
        Some(path) => {
            if !o.prompts.is_empty() {
                bail!("--inputs carries the prompt (ids or embeddings): no --prompt with it");
            }
            let m = checkpoint::load_tensors(path, &Device::Cpu)?;
            let x = m
                .get("x_T")
                .or_else(|| m.get("noise"))
                .ok_or_else(|| anyhow!("{}: no tensor `x_T` (or `noise`)", path.display()))?
                .to_dtype(DType::F32)?;
            let cond = embeds_from(&p, &m, path, "")?.ok_or_else(|| {
                anyhow!(
                    "{}: no `input_ids` or `prompt_embeds` (the prompt)",
                    path.display()
                )
            })?;
            let uncond = embeds_from(&p, &m, path, "negative")?;
            (x, cond, uncond)
        }
        None => {
            if o.prompts.is_empty() {
                bail!("a text-to-image pipeline samples from prompts: give --prompt TEXT (repeat it for more samples) or --inputs FILE");
            }
            let ids = p.tokenize(o.prompts)?;
            let cond = p.encode_ids(&ids)?;
            let shape = [p.unet.in_channels, p.unet.sample_size, p.unet.sample_size];
            let (x, _) = crate::export::seeded_noise(&shape, None, o.prompts.len(), o.seed)?;
            (x, cond, None)
        }
    };
    let batch = x_t.dims().first().copied().unwrap_or(0);
    if cond.dims()[0] != batch {
        bail!(
            "{} prompt embeddings for {batch} starting latents",
            cond.dims()[0]
        );
    }
    let uncond = match (o.guidance != 1.0, file_uncond) {
        (false, _) => None,
        (true, Some(u)) => Some(u),
        (true, None) => {
            let neg = o.negative_prompt.unwrap_or("").to_string();
            let ids = p.tokenize(&vec![neg; batch])?;
            Some(p.encode_ids(&ids)?)
        }
    };
    let (latents, image) = p
        .generate(&x_t, &cond, uncond.as_ref(), o.guidance, steps)
        .context("sampling the pipeline")?;
    Ok(PipelineSample {
        latents,
        image,
        steps,
    })
}
