//! `flashctl export --model PIPELINE`: ONE text-to-image graph. Inputs `noise` [B, latent, h, w]
//! f32 and `input_ids` [B, 77] int64; outputs `image` [B, 3, H, W] in [0, 1] and `latents`.
//! Inside: the text encoder, every guided UNet step unrolled (the negative prompt's embeddings
//! baked in as a constant: they depend on no input), the VAE decoder; each weight stored once.

use super::pipeline::{decode_image, encode_text, guided_latents, SdPipeline};
use crate::export::{write_graph_export, ExportRecord, ExportReport, GraphForm, REFERENCE_SEED};
use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use flashctl_exporters::{check::check_structure, encode_model, summarize, to_model_proto};
use flashctl_graphs::{DType, Dim, TraceOps};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// The prompts of the reference stored beside the graph (validate runs every runtime on them).
pub const REFERENCE_PROMPTS: &[&str] = &["a photo of a sneaker", "an ankle boot, studio light"];
/// diffusers' `StableDiffusionPipeline` defaults.
pub const DEFAULT_STEPS: usize = 50;
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// Export the pipeline in `dir` as one graph at `out` (manifest.json, reference.safetensors
/// beside it).
pub fn export_pipeline(
    dir: &Path,
    steps: Option<usize>,
    guidance: f32,
    form: GraphForm,
    out: &Path,
) -> Result<ExportReport> {
    let start = std::time::Instant::now();
    if out.extension().map(|e| e != "onnx").unwrap_or(true) {
        bail!("--out must name a .onnx file, got {}", out.display());
    }
    if !(guidance.is_finite() && guidance >= 1.0) {
        bail!("--guidance-scale {guidance}: expected a number >= 1 (1 = no guidance)");
    }
    let p = SdPipeline::load(dir, &Device::Cpu)?;
    let steps = steps.unwrap_or(DEFAULT_STEPS);
    let plan = p.plan(steps)?;
    let max_len = p.tokenizer.max_len;
    // the empty negative prompt's embeddings, computed once
    let negative_ids = p.tokenize(&[String::new()])?;
    let negative = p.encode_ids(&negative_ids)?;
    let guided = p.uses_cfg(guidance);
    // 1. trace: text encoder -> guided steps -> VAE decoder
    let ops = TraceOps::new(p.var_builder(), "text_to_image");
    let size = p.unet.sample_size;
    let noise = ops.input(
        "noise",
        DType::F32,
        vec![
            Dim::Batch,
            Dim::Known(p.unet.in_channels),
            Dim::Known(size),
            Dim::Known(size),
        ],
    );
    let ids = ops.input(
        "input_ids",
        DType::I64,
        vec![Dim::Batch, Dim::Known(max_len)],
    );
    let trace = || -> flashctl_graphs::Result<_> {
        use flashctl_graphs::Ops;
        let cond = encode_text(&p.text_encoder, &ops, &ids)?;
        let uncond = if guided {
            let v: Vec<f32> = negative.flatten_all()?.to_vec1()?;
            Some(ops.constant(&v, negative.dims())?)
        } else {
            None
        };
        let latents = guided_latents(
            &p.unet,
            &ops,
            &plan,
            &noise,
            &cond,
            uncond.as_ref(),
            guidance,
        )?;
        let image = decode_image(&p.vae, &ops, &latents)?;
        Ok((latents, image))
    };
    let (latents, image) = trace().map_err(|e| anyhow!("tracing the pipeline: {e}"))?;
    let graph = ops
        .finish(&[("image", &image), ("latents", &latents)])
        .map_err(|e| anyhow!("tracing the pipeline: {e}"))?;
    // 2. reference from the eager path on seeded noise and the reference prompts
    let prompts: Vec<String> = REFERENCE_PROMPTS.iter().map(|s| s.to_string()).collect();
    let shape = [p.unet.in_channels, size, size];
    let (x_t, _) = crate::export::seeded_noise(&shape, None, prompts.len(), REFERENCE_SEED)?;
    let input_ids = p.tokenize(&prompts)?;
    let cond = p.encode_ids(&input_ids)?;
    let uncond = negative.repeat((prompts.len(), 1, 1))?;
    let (ref_latents, ref_image) =
        p.generate(&x_t, &cond, guided.then_some(&uncond), guidance, steps)?;
    let mut reference: HashMap<String, Tensor> = HashMap::new();
    reference.insert("noise".into(), x_t);
    reference.insert("input_ids".into(), input_ids);
    reference.insert("image".into(), ref_image);
    reference.insert("latents".into(), ref_latents);
    let info = json!({
        "class": "StableDiffusionPipeline",
        "steps": steps,
        "timesteps": plan.timesteps,
        "guidance_scale": guidance,
        "negative_prompt": "",
        "input_ids": ids_note(&p),
        "vae_scaling_factor": p.vae.scaling_factor,
    });
    let doc = format!(
        "flashctl text-to-image graph of {}: CLIP text encoder, {steps} DDIM steps with \
         classifier-free guidance {guidance}, VAE decoder",
        dir.display()
    );
    let props = vec![
        ("flashctl.steps".into(), steps.to_string()),
        ("flashctl.timesteps".into(), format!("{:?}", plan.timesteps)),
        ("flashctl.guidance_scale".into(), guidance.to_string()),
    ];
    let written = pipeline_record("text_to_image", dir, info, Some(plan), p.parameter_count());
    write_graph(graph, form, doc, props, reference, out, written, start)
}

/// How `input_ids` are made, for manifests and bundle READMEs.
fn ids_note(p: &SdPipeline) -> String {
    format!(
        "the pipeline's CLIP tokenizer ({}): bos, the prompt's tokens (at most {}), eos, padded \
         with the pad token to {}",
        p.tokenizer.source,
        p.tokenizer.max_len - 2,
        p.tokenizer.max_len
    )
}

/// What the manifest of a pipeline graph records: no flashctl model, the pipeline section, the
/// pipeline folder (f32 parameters: 4 bytes each).
fn pipeline_record<'a>(
    kind: &'static str,
    dir: &'a Path,
    info: serde_json::Value,
    plan: Option<crate::sampler::SamplerPlan>,
    parameters: usize,
) -> ExportRecord<'a> {
    ExportRecord {
        kind,
        model: None,
        pipeline: Some(info),
        sampler: plan,
        parameter_bytes: 4 * parameters,
        reference_seed: REFERENCE_SEED,
        model_dir: dir,
        model_fingerprint: None,
    }
}

/// Lower, check and write `graph`, its reference and manifest (each atomically).
#[allow(clippy::too_many_arguments)]
fn write_graph(
    graph: flashctl_graphs::Graph,
    form: GraphForm,
    doc: String,
    props: Vec<(String, String)>,
    reference: HashMap<String, Tensor>,
    out: &Path,
    record: ExportRecord,
    start: std::time::Instant,
) -> Result<ExportReport> {
    let (graph, rewrites) = form.lower(graph);
    let meta = form.meta(doc, props)?;
    let proto = to_model_proto(&graph, &meta);
    check_structure(&proto)?;
    form.check(&proto)?;
    let bytes = encode_model(&proto);
    let summary = summarize(&proto);
    write_graph_export(
        &graph, &bytes, &summary, reference, out, form, rewrites, start, record,
    )
}

/// `export --model PIPELINE --components`: the text encoder (`input_ids` -> `prompt_embeds`),
/// one UNet call (`x`, `t`, `encoder_hidden_states` -> `denoiser_out`) and the VAE decoder
/// (`latents` -> `image` in [0, 1], the division by `scaling_factor` inside) as three graphs,
/// each in its own folder beside `out` (`text_encoder/`, `unet/`, `vae_decoder/`, each with
/// `model.onnx`, manifest and reference), for hosts that run the scheduler loop themselves.
pub fn export_components(dir: &Path, form: GraphForm, out: &Path) -> Result<Vec<ExportReport>> {
    use crate::models::unet::forward_with_context;
    use flashctl_graphs::{EagerOps, Prefixed};
    let start = std::time::Instant::now();
    let p = SdPipeline::load(dir, &Device::Cpu)?;
    let root = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prompts: Vec<String> = REFERENCE_PROMPTS.iter().map(|s| s.to_string()).collect();
    let n = prompts.len();
    let ids = p.tokenize(&prompts)?;
    let embeds = p.encode_ids(&ids)?;
    let (c, s) = (p.unet.in_channels, p.unet.sample_size);
    let (x, _) = crate::export::seeded_noise(&[c, s, s], None, n, REFERENCE_SEED)?;
    let t = Tensor::full(500f32, n, &Device::Cpu)?;
    let eager = EagerOps::new(p.var_builder());
    let (max_len, width) = (p.tokenizer.max_len, p.text_encoder.hidden_size);
    let latent_dims = vec![Dim::Batch, Dim::Known(c), Dim::Known(s), Dim::Known(s)];
    let err = |what: &str| {
        let what = what.to_string();
        move |e: flashctl_graphs::GraphError| anyhow!("{what}: {e}")
    };
    let mut reports = vec![];
    let mut write = |name: &'static str,
                     graph: flashctl_graphs::Graph,
                     reference: HashMap<String, Tensor>,
                     doc: String,
                     parameter_prefix: &str|
     -> Result<()> {
        let params: usize = p
            .var_builder_names()
            .filter(|(k, _)| k.starts_with(parameter_prefix))
            .map(|(_, n)| n)
            .sum();
        let info = json!({"class": "StableDiffusionPipeline", "component": name,
                          "input_ids": ids_note(&p), "vae_scaling_factor": p.vae.scaling_factor});
        let written = pipeline_record("component", dir, info, None, params);
        let path = root.join(name).join("model.onnx");
        reports.push(write_graph(
            graph,
            form,
            doc,
            vec![],
            reference,
            &path,
            written,
            start,
        )?);
        Ok(())
    };
    // text encoder
    {
        let ops = TraceOps::new(p.var_builder(), "text_encoder");
        let i = ops.input(
            "input_ids",
            DType::I64,
            vec![Dim::Batch, Dim::Known(max_len)],
        );
        let y = encode_text(&p.text_encoder, &ops, &i).map_err(err("text encoder"))?;
        let g = ops
            .finish(&[("prompt_embeds", &y)])
            .map_err(err("text encoder"))?;
        let mut r = HashMap::new();
        r.insert("input_ids".to_string(), ids.clone());
        r.insert("prompt_embeds".to_string(), embeds.clone());
        write(
            "text_encoder",
            g,
            r,
            "CLIP text encoder".into(),
            "text_encoder.",
        )?;
    }
    // one UNet call
    {
        let ops = TraceOps::new(p.var_builder(), "unet");
        let xi = ops.input("x", DType::F32, latent_dims.clone());
        let ti = ops.input("t", DType::F32, vec![Dim::Batch]);
        let ci = ops.input(
            "encoder_hidden_states",
            DType::F32,
            vec![Dim::Batch, Dim::Known(max_len), Dim::Known(width)],
        );
        let y = Prefixed::run(&ops, "unet", |o| {
            forward_with_context(&p.unet, o, &xi, &ti, None, Some(&ci))
        })
        .map_err(err("unet"))?;
        let g = ops.finish(&[("denoiser_out", &y)]).map_err(err("unet"))?;
        let want = Prefixed::run(&eager, "unet", |o| {
            forward_with_context(&p.unet, o, &x, &t, None, Some(&embeds))
        })
        .map_err(err("unet"))?;
        let mut r = HashMap::new();
        r.insert("x".to_string(), x.clone());
        r.insert("t".to_string(), t.clone());
        r.insert("encoder_hidden_states".to_string(), embeds.clone());
        r.insert("denoiser_out".to_string(), want);
        write(
            "unet",
            g,
            r,
            "UNet2DConditionModel, one call".into(),
            "unet.",
        )?;
    }
    // VAE decoder
    {
        let ops = TraceOps::new(p.var_builder(), "vae_decoder");
        let zi = ops.input("latents", DType::F32, latent_dims);
        let y = decode_image(&p.vae, &ops, &zi).map_err(err("vae decoder"))?;
        let g = ops.finish(&[("image", &y)]).map_err(err("vae decoder"))?;
        let want = decode_image(&p.vae, &eager, &x).map_err(err("vae decoder"))?;
        let mut r = HashMap::new();
        r.insert("latents".to_string(), x.clone());
        r.insert("image".to_string(), want);
        write(
            "vae_decoder",
            g,
            r,
            "AutoencoderKL decoder, [0, 1] output".into(),
            "vae.decoder.",
        )?;
    }
    Ok(reports)
}
