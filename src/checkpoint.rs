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
    pub fn parameter_bytes(&self) -> usize {
        self.weights.values().map(|t| t.elem_count() * 4).sum()
    }
}

/// Load a model directory, refusing missing files, corrupt or truncated safetensors and
/// non-finite weights with the offending path or tensor named.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel, CheckpointError> {
    if !dir.is_dir() {
        return Err(bad(dir, "model directory does not exist"));
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
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    flashctl_exporters::write_atomic(path, bytes).map_err(std::io::Error::other)
}

/// Serialise tensors to safetensors bytes in memory, then write atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let tmp = path.with_extension("safetensors.partial");
    candle_core::safetensors::save(tensors, &tmp)?;
    let f = std::fs::File::open(&tmp)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn save_config(dir: &Path, cfg: &ModelConfig) -> anyhow::Result<()> {
    write_atomic(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )?;
    Ok(())
}
