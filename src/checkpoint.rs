//! Model directories: `config.json` (architecture, schedule, sampler defaults) beside
//! `model.safetensors` (EMA weights). Every write is atomic (temp file + rename).

use crate::models::Denoiser;
use crate::sampler::SamplerKind;
use crate::schedule::ScheduleConfig;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const SCHEMA_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {msg}")]
    Bad { path: String, msg: String },
}

fn bad(path: &Path, msg: impl ToString) -> CheckpointError {
    CheckpointError::Bad {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// How `sample` and `export` run this model unless told otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerDefaults {
    pub kind: SamplerKind,
    pub steps: usize,
    /// A distilled student's fixed timestep list (DDIM chained through exactly these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timesteps: Option<Vec<usize>>,
    /// Noise correction at the first step (Imagine Flash students).
    #[serde(default)]
    pub noise_correction: bool,
}

impl SamplerDefaults {
    /// A teacher's default: 50 DDIM steps on its own schedule.
    pub fn teacher() -> Self {
        Self {
            kind: SamplerKind::Ddim,
            steps: 50,
            timesteps: None,
            noise_correction: false,
        }
    }
}

impl ModelConfig {
    /// The sampler this model runs by default, or with `steps`/`kind` overrides. A student with a
    /// fixed timestep list only runs that list.
    pub fn sampler_plan(
        &self,
        steps: Option<usize>,
        kind: Option<SamplerKind>,
    ) -> anyhow::Result<crate::sampler::SamplerPlan> {
        let d = &self.sampler;
        // a one-step generator runs its single call and nothing else; a denoiser never does
        let generator = self.denoiser.is_generator();
        if generator || d.kind == SamplerKind::OneStep || kind == Some(SamplerKind::OneStep) {
            if !generator {
                anyhow::bail!("the one_step sampler needs a one-step generator (KDM), this model is a denoiser");
            }
            if steps.is_some_and(|s| s != 1) || kind.is_some_and(|k| k != SamplerKind::OneStep) {
                anyhow::bail!("this model is a one-step KDM generator: it runs exactly 1 step");
            }
            return Ok(crate::sampler::one_step_plan(&self.schedule));
        }
        if let Some(ts) = &d.timesteps {
            if steps.is_some_and(|s| s != ts.len()) || kind.is_some_and(|k| k != d.kind) {
                anyhow::bail!(
                    "this model was distilled for {} {} steps at timesteps {ts:?}; it runs only that sampler",
                    ts.len(),
                    d.kind
                );
            }
            return crate::sampler::chain_plan(&self.schedule, ts, d.noise_correction)
                .map_err(anyhow::Error::msg);
        }
        let steps = steps.unwrap_or(d.steps);
        let kind = kind.unwrap_or(d.kind);
        crate::sampler::plan(kind, &self.schedule, steps)
            .map_err(|e| anyhow::anyhow!("{steps} {kind} steps: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub schema_version: u32,
    /// `teacher` (trained by flashctl) or a distilled `student`.
    pub role: String,
    pub dataset: String,
    pub denoiser: Denoiser,
    pub schedule: ScheduleConfig,
    pub sampler: SamplerDefaults,
    /// How a student was made: method, options, teacher (provenance; not read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distillation: Option<serde_json::Value>,
}

pub struct LoadedModel {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: HashMap<String, Tensor>,
}

impl LoadedModel {
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.weights.clone(), DType::F32, device)
    }
    /// sha256 over the weights (sorted by name, f32 little-endian) and the schedule: the same
    /// function of the model however its files are laid out.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        let mut bytes = vec![];
        let mut names: Vec<&String> = self.weights.keys().collect();
        names.sort();
        for n in names {
            bytes.extend(n.as_bytes());
            let t = self.weights[n].flatten_all()?.to_dtype(DType::F32)?;
            for v in t.to_vec1::<f32>()? {
                bytes.extend(v.to_le_bytes());
            }
        }
        bytes.extend(serde_json::to_vec(&self.config.schedule)?);
        Ok(sha256_hex(&bytes))
    }
    pub fn parameter_bytes(&self) -> usize {
        self.weights.values().map(|t| t.elem_count() * 4).sum()
    }
}

/// Load a model directory — flashctl's own or a diffusers `UNet2DModel` (model or pipeline
/// folder) — refusing missing files, corrupt or truncated safetensors, non-finite weights,
/// unsupported options and weights that do not fit the architecture, naming what is wrong.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel, CheckpointError> {
    if dir.is_file() {
        return Err(bad(
            dir,
            "is a file; give the model directory (the folder holding config.json)",
        ));
    }
    if !dir.is_dir() {
        return Err(bad(dir, "model directory does not exist"));
    }
    if crate::diffusers::is_diffusers_dir(dir) {
        return load_diffusers(dir, device);
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(&cfg_path, e))?;
    let config: ModelConfig =
        serde_json::from_str(&text).map_err(|e| bad(&cfg_path, format!("invalid config: {e}")))?;
    if config.schema_version != SCHEMA_VERSION {
        return Err(bad(
            &cfg_path,
            format!(
                "schema_version {} (this flashctl reads {SCHEMA_VERSION})",
                config.schema_version
            ),
        ));
    }
    let wpath = dir.join(WEIGHTS_FILE);
    let weights = load_tensors(&wpath, device)?;
    check_weights(&config.denoiser, &weights, &wpath)?;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        config,
        weights,
    })
}

/// Read a safetensors file fully (no mmap), checking every float tensor is finite.
pub fn load_tensors(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(path, format!("corrupt or truncated safetensors: {e}")))?;
    for (name, t) in &tensors {
        if t.dtype().is_float() {
            let finite = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                .map_err(|e| bad(path, e))?
                .iter()
                .all(|v| v.is_finite());
            if !finite {
                return Err(bad(path, format!("tensor `{name}` contains NaN or Inf")));
            }
        }
    }
    Ok(tensors)
}

/// Write bytes atomically (temp file in the same folder + fsync + rename).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    flashctl_exporters::write_atomic(path, bytes).map_err(std::io::Error::other)
}

/// Serialise tensors to safetensors bytes in memory, then write atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension("safetensors.partial");
    let result = (|| -> anyhow::Result<()> {
        candle_core::safetensors::save(tensors, &tmp)?;
        // the safetensors writer creates its file 0600; give it the mode every other file gets
        // (0666 less the umask), or a bundle handed to another user cannot be read
        ordinary_file_mode(&tmp)?;
        let f = std::fs::File::open(&tmp)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Set `path` to the mode `File::create` gives: 0666 less the process umask.
#[cfg(unix)]
fn ordinary_file_mode(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // umask can only be read by setting it; done once, and restored at once
    let umask = *UMASK.get_or_init(|| unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    });
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666 & !umask))
}

#[cfg(not(unix))]
fn ordinary_file_mode(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

pub fn save_config(dir: &Path, cfg: &ModelConfig) -> anyhow::Result<()> {
    write_atomic(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )?;
    Ok(())
}

/// A diffusers model directory as a flashctl teacher: its UNet, its scheduler, DDIM by default.
fn load_diffusers(dir: &Path, device: &Device) -> Result<LoadedModel, CheckpointError> {
    use crate::diffusers as hf;
    let pipeline_class = hf::read_object(&dir.join("model_index.json"))
        .ok()
        .and_then(|m| {
            m.get("_class_name")
                .and_then(|v| v.as_str())
                .map(String::from)
        });
    if let Some(class) =
        pipeline_class.filter(|c| crate::sd::pipeline::PIPELINE_CLASSES.contains(&c.as_str()))
    {
        return Err(bad(
            dir,
            format!(
                "a {class} folder (text-to-image): this command does not take pipeline teachers \
                 yet (`teacher run`, `sample` and `export` do)"
            ),
        ));
    }
    let layout = hf::layout(dir).map_err(|e| bad(dir, e))?;
    let unet = hf::read_object(&layout.config)
        .and_then(|m| hf::parse_unet_config(&m))
        .map_err(|e| bad(&layout.config, e))?;
    let schedule = hf::read_object(&layout.scheduler)
        .and_then(|m| hf::parse_scheduler_config(&m))
        .map_err(|e| bad(&layout.scheduler, e))?;
    let denoiser = Denoiser::Unet(unet);
    let mut weights = hf::rename_legacy_attention_keys(load_tensors(&layout.weights, device)?);
    // fp16/bf16 checkpoints are computed in float32, as flashctl computes everything
    for t in weights.values_mut() {
        if t.dtype().is_float() && t.dtype() != DType::F32 {
            *t = t
                .to_dtype(DType::F32)
                .map_err(|e| bad(&layout.weights, e))?;
        }
    }
    check_weights(&denoiser, &weights, &layout.weights)?;
    Ok(LoadedModel {
        dir: dir.to_path_buf(),
        config: ModelConfig {
            schema_version: SCHEMA_VERSION,
            role: "teacher".into(),
            dataset: format!("diffusers:{}", dir.display()),
            denoiser,
            schedule,
            sampler: SamplerDefaults::teacher(),
            distillation: None,
        },
        weights,
    })
}

/// The parameters (name, shape) the architecture asks for, found by tracing one forward pass
/// with a probe backend (no arithmetic is run).
pub fn expected_parameters(d: &Denoiser) -> Result<ParamList, String> {
    use flashctl_graphs::{Dim, TraceOps};
    let probe = ParamProbe::default();
    let seen = probe.seen.clone();
    let vb = VarBuilder::from_backend(Box::new(probe), DType::F32, Device::Cpu);
    let ops = TraceOps::new(vb, "probe");
    let mut shape = vec![Dim::Batch];
    shape.extend(d.sample_shape().into_iter().map(Dim::Known));
    let x = ops.input("x", flashctl_graphs::DType::F32, shape);
    let t = ops.input("t", flashctl_graphs::DType::F32, vec![Dim::Batch]);
    let y = d
        .num_classes()
        .map(|_| ops.input("y", flashctl_graphs::DType::I64, vec![Dim::Batch]));
    d.forward(&ops, &x, &t, y.as_ref())
        .map_err(|e| e.to_string())?;
    let seen = seen.lock().unwrap().clone();
    Ok(seen)
}

type ParamList = Vec<(String, Vec<usize>)>;

#[derive(Default)]
struct ParamProbe {
    seen: std::sync::Arc<std::sync::Mutex<ParamList>>,
}

impl candle_nn::var_builder::SimpleBackend for ParamProbe {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut seen = self.seen.lock().unwrap();
        if !seen.iter().any(|(n, _)| n == name) {
            seen.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("probe: no tensor `{name}`")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every parameter the architecture needs is present with its shape, and the checkpoint holds
/// nothing else (an extra tensor means an option the config does not describe).
pub fn check_weights(
    d: &Denoiser,
    weights: &HashMap<String, Tensor>,
    file: &Path,
) -> Result<(), CheckpointError> {
    let expected = expected_parameters(d).map_err(|e| bad(file, e))?;
    for (name, shape) in &expected {
        match weights.get(name) {
            None => {
                return Err(bad(
                    file,
                    format!("missing tensor `{name}` (shape {shape:?})"),
                ))
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(bad(
                    file,
                    format!(
                        "tensor `{name}` has shape {:?}, the config needs {shape:?}",
                        t.dims()
                    ),
                ))
            }
            _ => {}
        }
    }
    let mut extra: Vec<&String> = weights
        .keys()
        .filter(|k| !expected.iter().any(|(n, _)| n == *k))
        .collect();
    extra.sort();
    if let Some(first) = extra.first() {
        return Err(bad(
            file,
            format!(
                "{} tensor(s) the config does not use, first `{first}` (an option missing from the config?)",
                extra.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A saved checkpoint has the mode of any other file the process creates (0644 under umask
    /// 022), not the safetensors writer's 0600.
    #[test]
    fn saved_tensors_get_the_ordinary_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut t = HashMap::new();
        t.insert(
            "w".to_string(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let path = dir.path().join("model.safetensors");
        save_tensors(&path, &t).unwrap();
        let plain = dir.path().join("plain.json");
        std::fs::write(&plain, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
        assert!(!dir.path().join("model.safetensors.partial").exists());
    }
}
