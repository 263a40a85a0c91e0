//! `flashctl export`: trace the sampler `flashctl sample` runs, with the step count fixed, into
//! ONE ONNX graph; write `manifest.json` and `reference.safetensors` beside it.

use crate::checkpoint::sha256_hex;
use crate::checkpoint::{self, LoadedModel};
use crate::network::Network;
use crate::sampler::{SamplerKind, SamplerPlan};
use crate::validation::BadInput;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_exporters::{
    check::check_structure, encode_model, summarize, to_model_proto, ExportMeta,
};
use flashctl_graphs::{EagerOps, Graph};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MANIFEST_SCHEMA: u32 = 1;
pub const REFERENCE_FILE: &str = "reference.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Batch size of the reference inputs stored beside a graph.
pub const REFERENCE_BATCH: usize = 4;
/// Seed of the reference noise.
pub const REFERENCE_SEED: u64 = 20241;

#[derive(Debug, Serialize, Deserialize)]
pub struct Signature {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
}

/// A graph input's or output's manifest entry.
fn signature(v: &flashctl_graphs::ValueInfo) -> Signature {
    Signature {
        name: v.name.clone(),
        dtype: v.dtype.name().into(),
        shape: v.shape.iter().map(|d| d.to_string()).collect(),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// `sampler` (the unrolled K-step sampler) or `denoiser` (one call, an ONNX teacher)
    pub kind: String,
    pub graph: String,
    pub graph_sha256: String,
    pub opset: i64,
    /// the flashctl model exported (None for a text-to-image pipeline export: see `pipeline`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<checkpoint::ModelConfig>,
    /// a text-to-image pipeline export: class, steps, timesteps, guidance, tokenizer
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerPlan>,
    pub inputs: Vec<Signature>,
    pub outputs: Vec<Signature>,
    pub denoiser_parameter_bytes: usize,
    pub initializer_bytes: usize,
    pub node_count: usize,
    pub reference: String,
    pub reference_seed: u64,
    /// `fp32` or `fp16` (fp16 compute inside the denoiser, fp32 inputs/outputs); validate picks
    /// the tolerance levels of this precision by default.
    #[serde(default = "fp32")]
    pub precision: String,
    /// the runtime the graph is lowered for (`export --target`); validate checks the graph
    /// against its allow-list
    #[serde(default = "generic")]
    pub target: String,
    /// The model directory exported (canonical path) and its weight fingerprint: the candle
    /// eager runtime and `--bisect` rerun it, refusing a model changed since the export.
    #[serde(default)]
    pub model_dir: Option<String>,
    #[serde(default)]
    pub model_fingerprint: Option<String>,
}

fn fp32() -> String {
    "fp32".into()
}

fn generic() -> String {
    "generic".into()
}

/// The `manifest.json` beside `graph`, which must describe that graph; the error says why not.
pub fn manifest_beside(graph: &Path) -> std::result::Result<Manifest, String> {
    let path = graph.parent().unwrap_or(Path::new(".")).join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a flashctl export manifest: {e}", path.display()))?;
    let file = graph.file_name().map(|f| f.to_string_lossy().to_string());
    if file.as_deref() != Some(manifest.graph.as_str()) {
        return Err(format!(
            "{} describes {}, not {}",
            path.display(),
            manifest.graph,
            graph.display()
        ));
    }
    Ok(manifest)
}

/// Arithmetic precision of an exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    /// the denoiser in fp16, sampler arithmetic / norm statistics / softmax / timestep
    /// embedding in fp32; fp32 inputs and outputs (see `flashctl_graphs::fp16`)
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            o => Err(format!("unknown precision `{o}` (fp32, fp16)")),
        }
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
    fn apply(self, g: Graph) -> Graph {
        match self {
            Precision::Fp32 => g,
            Precision::Fp16 => flashctl_graphs::fp16::to_fp16(&g),
        }
    }
}

/// The receiving runtime an export is lowered for: per op, the form that target runs best and
/// accepts (`flashctl_graphs::lowering`). `generic` is the composite form every runtime takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportTarget {
    #[default]
    Generic,
    Tract,
    OrtCpu,
    OrtCuda,
    TensorRt10,
    OrtMobile,
}

impl std::str::FromStr for ExportTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "generic" => Self::Generic,
            "tract" => Self::Tract,
            "ort-cpu" => Self::OrtCpu,
            "ort-cuda" => Self::OrtCuda,
            "tensorrt10" | "ort-tensorrt" => Self::TensorRt10,
            "ort-mobile" => Self::OrtMobile,
            o => {
                return Err(format!(
                    "unknown --target `{o}` (generic, tract, ort-cpu, ort-cuda, tensorrt10, \
                     ort-mobile)"
                ))
            }
        })
    }
}

impl ExportTarget {
    /// 17 (LayerNormalization's first, ReduceMean's last with attribute axes), except for ORT's
    /// mobile package, which stops at 15.
    pub fn default_opset(self) -> i64 {
        match self {
            Self::OrtMobile => 15,
            _ => flashctl_exporters::OPSET,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Tract => "tract",
            Self::OrtCpu => "ort-cpu",
            Self::OrtCuda => "ort-cuda",
            Self::TensorRt10 => "tensorrt10",
            Self::OrtMobile => "ort-mobile",
        }
    }

    /// Group norms as InstanceNormalization where ONNX Runtime runs them as one kernel; the
    /// composite where NNAPI/ORT-mobile need primitives, for tract (which expands
    /// InstanceNormalization into the same primitives) and for TensorRT 10 (whose fp16
    /// InstanceNormalization is the known hazard; its native GroupNormalization form needs
    /// opset 18+ and a lent GPU to measure, issue 18/20).
    pub fn lowering(self) -> flashctl_graphs::lowering::Lowering {
        use flashctl_graphs::lowering::{GroupNormForm, Lowering, UpsampleForm};
        match self {
            Self::OrtCpu | Self::OrtCuda => Lowering {
                group_norm: GroupNormForm::InstanceNorm,
                upsample: UpsampleForm::Resize,
            },
            Self::Generic | Self::Tract | Self::TensorRt10 | Self::OrtMobile => Lowering::default(),
        }
    }
}

/// Precision, target and opset of one export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphForm {
    pub precision: Precision,
    pub target: ExportTarget,
    /// default-domain opset (None: the target's, [`ExportTarget::default_opset`])
    pub opset: Option<i64>,
}

impl From<Precision> for GraphForm {
    fn from(precision: Precision) -> Self {
        Self {
            precision,
            ..Default::default()
        }
    }
}

impl GraphForm {
    /// The opset written: the one asked for, else the target's.
    pub fn opset(self) -> i64 {
        self.opset.unwrap_or(self.target.default_opset())
    }

    pub(crate) fn meta(self, doc: String, mut props: Vec<(String, String)>) -> Result<ExportMeta> {
        let opset = self.opset();
        let range = flashctl_exporters::onnx::OPSETS;
        if !range.contains(&opset) {
            return Err(BadInput(format!(
                "--opset {opset}: flashctl lowers to opsets {}..={}",
                range.start(),
                range.end()
            ))
            .into());
        }
        props.push(("flashctl.target".into(), self.target.name().into()));
        Ok(ExportMeta {
            doc,
            props,
            opset: Some(opset),
        })
    }

    /// The traced graph in this precision, then rewritten for the target.
    pub(crate) fn lower(self, g: Graph) -> (Graph, flashctl_graphs::lowering::Rewrites) {
        self.target.lowering().apply(self.precision.apply(g))
    }

    /// The lowered model must pass its own target's allow-list: an export never writes a graph
    /// the receiver it was made for refuses.
    pub(crate) fn check(self, proto: &flashctl_exporters::pb::ModelProto) -> Result<()> {
        let t =
            flashctl_exporters::targets::target_by_name(self.target.name()).map_err(BadInput)?;
        let what = format!("--target {}: the lowered graph", self.target.name());
        crate::validation::check_model_target(proto, t, &what)
    }
}

pub struct ExportReport {
    pub graph_path: PathBuf,
    pub manifest_path: PathBuf,
    pub reference_path: PathBuf,
    pub initializer_bytes: usize,
    pub parameter_bytes: usize,
    pub node_count: usize,
    pub seconds: f64,
    pub target: ExportTarget,
    /// group norms and upsamplings rewritten for the target (`flashctl_graphs::lowering`)
    pub lowered_group_norms: usize,
    pub lowered_upsamples: usize,
}

/// Trace the K-step sampler of `model` into the graph IR.
pub fn trace_sampler(model: &LoadedModel, plan: &SamplerPlan) -> Result<Graph> {
    trace_denoiser_sampler(
        model.var_builder(&Device::Cpu),
        &model.config.denoiser,
        plan,
    )
}

/// Trace `plan` run with `d` (weights from `vb`): inputs `noise` [batch, ...] and, for
/// class-conditional models, `class_labels` [batch] int64; output `image`.
pub fn trace_denoiser_sampler(
    vb: candle_nn::VarBuilder<'static>,
    d: &crate::models::Denoiser,
    plan: &SamplerPlan,
) -> Result<Graph> {
    Network::Sampler { denoiser: d, plan }.trace(vb)
}

/// Reference inputs: seeded standard-normal noise and (for class-conditional models) labels.
pub fn reference_inputs(
    model: &LoadedModel,
    batch: usize,
    seed: u64,
) -> Result<(Tensor, Option<Tensor>)> {
    let d = &model.config.denoiser;
    seeded_noise(&d.sample_shape(), d.num_classes(), batch, seed)
}

/// Seeded standard-normal noise [batch, ...sample_shape] and cycling labels 0..k when
/// class-conditional.
pub fn seeded_noise(
    sample_shape: &[usize],
    num_classes: Option<usize>,
    batch: usize,
    seed: u64,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut shape = vec![batch];
    shape.extend(sample_shape);
    let n: usize = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let noise = Tensor::from_vec(v, shape, &Device::Cpu)?;
    let labels = match num_classes {
        Some(k) => Some(Tensor::from_vec(
            (0..batch).map(|i| (i % k) as i64).collect::<Vec<_>>(),
            batch,
            &Device::Cpu,
        )?),
        None => None,
    };
    Ok((noise, labels))
}

/// The eager sampler: what `flashctl sample` runs and what the exported graph must reproduce.
pub fn eager_sample(
    model: &LoadedModel,
    plan: &SamplerPlan,
    noise: &Tensor,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let ops = EagerOps::new(model.var_builder(noise.device()));
    let net = Network::Sampler {
        denoiser: &model.config.denoiser,
        plan,
    };
    let mut inputs = vec![noise];
    inputs.extend(labels);
    Ok(net.run(&ops, &inputs)?)
}

pub fn export(
    model_dir: &Path,
    steps: Option<usize>,
    kind: Option<SamplerKind>,
    form: impl Into<GraphForm>,
    out: &Path,
) -> Result<ExportReport> {
    let form: GraphForm = form.into();
    let precision = form.precision;
    let start = std::time::Instant::now();
    if out.extension().map(|e| e != "onnx").unwrap_or(true) {
        bail!("--out must name a .onnx file, got {}", out.display());
    }
    let model = checkpoint::load(model_dir, &Device::Cpu)?;
    let plan = model.config.sampler_plan(steps, kind)?;
    let (steps, kind) = (plan.steps.len(), plan.kind);
    // 1. trace and lower
    let (graph, rewrites) =
        form.lower(trace_sampler(&model, &plan).context("tracing the sampler")?);
    let meta = form.meta(
        format!(
            "flashctl {kind:?} sampler, {steps} steps, unrolled, {}",
            precision.name()
        ),
        vec![
            ("flashctl.precision".into(), precision.name().into()),
            ("flashctl.steps".into(), steps.to_string()),
            ("flashctl.timesteps".into(), format!("{:?}", plan.timesteps)),
            (
                "flashctl.noise_correction".into(),
                plan.noise_correction.to_string(),
            ),
        ],
    )?;
    let proto = to_model_proto(&graph, &meta);
    check_structure(&proto)?;
    form.check(&proto)?;
    let bytes = encode_model(&proto);
    let summary = summarize(&proto);
    // 2. reference outputs from the eager path, under the graph's own names
    let seed = REFERENCE_SEED;
    let (noise, labels) = reference_inputs(&model, REFERENCE_BATCH, seed)?;
    let image = eager_sample(&model, &plan, &noise, labels.as_ref())?;
    let mut reference = std::collections::HashMap::new();
    reference.insert("noise".to_string(), noise);
    if let Some(l) = labels {
        reference.insert("class_labels".to_string(), l.to_dtype(DType::I64)?);
    }
    reference.insert("image".to_string(), image);
    // 3. write graph, reference and manifest
    write_export(
        &model,
        &graph,
        &bytes,
        &summary,
        reference,
        out,
        seed,
        Some(plan),
        form,
        rewrites,
        start,
    )
}

/// `export --out DIR/NAME.onnx`: refuse a directory where the graph file should be, an earlier
/// export of the same graph, and a model, bundle or pairs directory (an export mixed into it),
/// unless `force`. (Another graph's export in DIR is refused by [`write_export`] regardless.)
pub fn prepare_out(out: &Path, force: bool) -> Result<()> {
    if out.is_dir() {
        return Err(BadInput(format!(
            "--out {}: is a directory; give the graph file to write, e.g. {}",
            out.display(),
            out.join("model.onnx").display()
        ))
        .into());
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!(
            "--out {}: {} is not a directory",
            out.display(),
            dir.display()
        ))
        .into());
    }
    if force {
        return Ok(());
    }
    let manifest_text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).ok();
    let is_bundle = manifest_text
        .as_deref()
        .is_some_and(|t| t.contains("\"engines\""));
    let earlier_export = out.exists() || {
        let graph = out.file_name().unwrap_or_default().to_string_lossy();
        manifest_text
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .is_some_and(|m| m["graph"].as_str() == Some(&graph) && m.get("engines").is_none())
    };
    if earlier_export {
        return Err(BadInput(format!(
            "--out {}: an earlier export is there: pass --force to replace it, or choose another --out",
            out.display()
        ))
        .into());
    }
    let foreign = is_bundle
        || crate::out_dir::MODEL_OR_PAIRS_MARKERS
            .iter()
            .any(|f| dir.join(f).exists());
    if foreign {
        return Err(BadInput(format!(
            "--out {}: {} holds {}; an export is not mixed into it (--force to write there anyway)",
            out.display(),
            dir.display(),
            crate::out_dir::describe(dir)
        ))
        .into());
    }
    Ok(())
}

/// Write the graph, `reference.safetensors` and `manifest.json` beside it (each atomically).
#[allow(clippy::too_many_arguments)]
fn write_export(
    model: &LoadedModel,
    graph: &Graph,
    bytes: &[u8],
    summary: &flashctl_exporters::OnnxSummary,
    reference: std::collections::HashMap<String, Tensor>,
    out: &Path,
    seed: u64,
    sampler: Option<SamplerPlan>,
    form: GraphForm,
    rewrites: flashctl_graphs::lowering::Rewrites,
    start: std::time::Instant,
) -> Result<ExportReport> {
    let record = ExportRecord {
        kind: if sampler.is_some() {
            "sampler"
        } else {
            "denoiser"
        },
        model: Some(model.config.clone()),
        pipeline: None,
        sampler,
        parameter_bytes: model.parameter_bytes(),
        reference_seed: seed,
        model_dir: &model.dir,
        model_fingerprint: Some(model.fingerprint()?),
    };
    write_graph_export(
        graph, bytes, summary, reference, out, form, rewrites, start, record,
    )
}

/// What a manifest records beyond the graph itself, from the export path that made it.
pub(crate) struct ExportRecord<'a> {
    /// `sampler`, `denoiser`, `text_to_image` or `component`
    pub kind: &'static str,
    pub model: Option<checkpoint::ModelConfig>,
    pub pipeline: Option<serde_json::Value>,
    pub sampler: Option<SamplerPlan>,
    pub parameter_bytes: usize,
    pub reference_seed: u64,
    pub model_dir: &'a Path,
    pub model_fingerprint: Option<String>,
}

/// Write `bytes` to `out`, `reference.safetensors` and `manifest.json` beside it (each
/// atomically, the manifest built before anything is written). One export per directory: a
/// directory whose manifest names another graph is refused before any file is touched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_graph_export(
    graph: &Graph,
    bytes: &[u8],
    summary: &flashctl_exporters::OnnxSummary,
    reference: std::collections::HashMap<String, Tensor>,
    out: &Path,
    form: GraphForm,
    rewrites: flashctl_graphs::lowering::Rewrites,
    start: std::time::Instant,
    record: ExportRecord,
) -> Result<ExportReport> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let reference_path = dir.join(REFERENCE_FILE);
    let manifest_path = dir.join(MANIFEST_FILE);
    // one export per directory: the reference and manifest of another graph are not overwritten
    let file_name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    if let Some(other) = std::fs::read_to_string(&manifest_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["graph"].as_str().map(String::from))
        .filter(|g| *g != file_name)
    {
        bail!(
            "{} already holds the export of {other} (manifest.json, reference.safetensors): \
             export {file_name} into another directory",
            dir.display()
        );
    }
    let manifest = Manifest {
        schema_version: MANIFEST_SCHEMA,
        kind: record.kind.into(),
        graph: file_name,
        graph_sha256: sha256_hex(bytes),
        opset: summary.opset,
        model: record.model,
        pipeline: record.pipeline,
        sampler: record.sampler,
        inputs: graph.inputs.iter().map(signature).collect(),
        outputs: graph.outputs.iter().map(signature).collect(),
        denoiser_parameter_bytes: record.parameter_bytes,
        initializer_bytes: summary.initializer_bytes,
        node_count: summary.node_count,
        reference: REFERENCE_FILE.into(),
        reference_seed: record.reference_seed,
        precision: form.precision.name().into(),
        target: form.target.name().into(),
        model_dir: std::fs::canonicalize(record.model_dir)
            .ok()
            .map(|p| p.display().to_string()),
        model_fingerprint: record.model_fingerprint,
    };
    let manifest_json = serde_json::to_string_pretty(&manifest)?;
    flashctl_exporters::write_atomic(out, bytes)?;
    checkpoint::save_tensors(&reference_path, &reference)?;
    checkpoint::write_atomic(&manifest_path, manifest_json.as_bytes())?;
    Ok(ExportReport {
        graph_path: out.to_path_buf(),
        manifest_path,
        reference_path,
        initializer_bytes: summary.initializer_bytes,
        parameter_bytes: record.parameter_bytes,
        node_count: summary.node_count,
        seconds: start.elapsed().as_secs_f64(),
        target: form.target,
        lowered_group_norms: rewrites.group_norms,
        lowered_upsamples: rewrites.upsamples,
    })
}

/// Trace one denoiser call: inputs `x` [batch, ...] f32, `t` [batch] f32 and, for
/// class-conditional models, `class_labels` [batch] int64; output `denoiser_out`.
pub fn trace_denoiser(
    vb: candle_nn::VarBuilder<'static>,
    d: &crate::models::Denoiser,
) -> Result<Graph> {
    Network::Denoiser { denoiser: d }.trace(vb)
}

/// The sidecar that makes an exported denoiser usable as an ONNX teacher.
pub fn denoiser_sidecar(model: &LoadedModel) -> Result<crate::teacher::OnnxSidecar> {
    let mut scheduler = match serde_json::to_value(&model.config.schedule)? {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a struct serialises to an object"),
    };
    scheduler.insert("_class_name".into(), "DDIMScheduler".into());
    let classes = model.config.denoiser.num_classes();
    Ok(crate::teacher::OnnxSidecar {
        schema_version: 1,
        scheduler,
        inputs: crate::teacher::OnnxInputNames {
            sample: "x".into(),
            timestep: "t".into(),
            class_labels: classes.map(|_| "class_labels".into()),
        },
        output: Some("denoiser_out".into()),
        sample_shape: Some(model.config.denoiser.sample_shape()),
        num_classes: classes,
    })
}

/// `flashctl export --denoiser-only`: one denoiser call as a graph, with the sidecar that lets
/// flashctl use it as an ONNX teacher, a manifest and reference outputs.
pub fn export_denoiser(
    model_dir: &Path,
    form: impl Into<GraphForm>,
    out: &Path,
) -> Result<ExportReport> {
    let form: GraphForm = form.into();
    let precision = form.precision;
    let start = std::time::Instant::now();
    if out.extension().map(|e| e != "onnx").unwrap_or(true) {
        bail!("--out must name a .onnx file, got {}", out.display());
    }
    let model = checkpoint::load(model_dir, &Device::Cpu)?;
    let d = &model.config.denoiser;
    let (graph, rewrites) = form
        .lower(trace_denoiser(model.var_builder(&Device::Cpu), d).context("tracing the denoiser")?);
    let meta = form.meta(
        format!("flashctl denoiser, one call, {}", precision.name()),
        vec![
            ("flashctl.kind".into(), "denoiser".into()),
            ("flashctl.precision".into(), precision.name().into()),
        ],
    )?;
    let proto = to_model_proto(&graph, &meta);
    check_structure(&proto)?;
    form.check(&proto)?;
    let bytes = encode_model(&proto);
    let summary = summarize(&proto);
    let seed = REFERENCE_SEED;
    let (x, labels) = reference_inputs(&model, REFERENCE_BATCH, seed)?;
    let last = (model.config.schedule.num_train_timesteps - 1) as f32;
    let tv: Vec<f32> = (0..REFERENCE_BATCH)
        .map(|i| (last * (1.0 - i as f32 / REFERENCE_BATCH as f32)).round())
        .collect();
    let t = Tensor::from_vec(tv, REFERENCE_BATCH, &Device::Cpu)?;
    let ops = EagerOps::new(model.var_builder(&Device::Cpu));
    let mut inputs = vec![&x, &t];
    inputs.extend(labels.as_ref());
    let y = Network::Denoiser { denoiser: d }.run(&ops, &inputs)?;
    let mut reference = std::collections::HashMap::new();
    reference.insert("x".to_string(), x);
    reference.insert("t".to_string(), t);
    if let Some(l) = labels {
        reference.insert("class_labels".to_string(), l);
    }
    reference.insert("denoiser_out".to_string(), y);
    let report = write_export(
        &model, &graph, &bytes, &summary, reference, out, seed, None, form, rewrites, start,
    )?;
    checkpoint::write_atomic(
        &crate::teacher::sidecar_path(out),
        serde_json::to_string_pretty(&denoiser_sidecar(&model)?)?.as_bytes(),
    )?;
    Ok(report)
}
