//! `candle`: the eager reference as a `validate` runtime. It reruns the exported model directory
//! (named in the export's manifest, weights checked against the fingerprint taken at export) on
//! the reference inputs, so a stale reference file or a model edited since the export shows up as
//! a failing runtime rather than passing silently.

use crate::checkpoint::{self, LoadedModel};
use crate::export::{manifest_beside, Manifest};
use crate::network::Network;
use candle_core::{Device, Tensor};
use flashctl_graphs::EagerOps;
use flashctl_validate::{HostData, HostTensor, Runtime, ValidateError};
use std::path::Path;

/// An export's manifest together with the model directory it was exported from.
pub struct ExportedModel {
    pub manifest: Manifest,
    pub model: LoadedModel,
}

impl ExportedModel {
    /// The `manifest.json` beside `graph` (it must describe that graph) and its model directory;
    /// the error says why the eager path cannot be rebuilt.
    pub fn open(graph: &Path) -> Result<Self, String> {
        let manifest = manifest_beside(graph).map_err(|e| {
            format!("{e} (the eager path reruns the model an export's manifest names)")
        })?;
        let model_dir = manifest.model_dir.clone().ok_or_else(|| {
            format!(
                "the manifest of {} names no model directory (exported by an older flashctl)",
                graph.display()
            )
        })?;
        let model = checkpoint::load(Path::new(&model_dir), &Device::Cpu)
            .map_err(|e| format!("model directory of the export: {e}"))?;
        let now = model.fingerprint().map_err(|e| e.to_string())?;
        if manifest.model_fingerprint.as_deref() != Some(now.as_str()) {
            return Err(format!(
                "{model_dir}: weights changed since the export (fingerprint {} then, {} now)",
                manifest.model_fingerprint.as_deref().unwrap_or("none"),
                &now[..12]
            ));
        }
        Ok(Self { manifest, model })
    }

    pub fn network(&self) -> Result<Network<'_>, String> {
        let denoiser = &self.model.config.denoiser;
        match (self.manifest.kind.as_str(), &self.manifest.sampler) {
            ("sampler", Some(plan)) => Ok(Network::Sampler { denoiser, plan }),
            ("denoiser", _) => Ok(Network::Denoiser { denoiser }),
            (k, _) => Err(format!("manifest kind `{k}` has no eager path")),
        }
    }

    /// Candle tensors for the network's inputs, in its order, from named host tensors.
    pub fn input_tensors(&self, named: &[HostTensor]) -> Result<Vec<Tensor>, String> {
        let net = self.network()?;
        net.inputs()
            .iter()
            .map(|spec| {
                let h = named
                    .iter()
                    .find(|t| t.name == spec.name)
                    .ok_or_else(|| format!("no value for input `{}`", spec.name))?;
                let t = match &h.data {
                    HostData::F32(v) => Tensor::from_slice(v, h.shape.as_slice(), &Device::Cpu),
                    HostData::I64(v) => Tensor::from_slice(v, h.shape.as_slice(), &Device::Cpu),
                };
                t.map_err(|e| format!("input `{}`: {e}", spec.name))
            })
            .collect()
    }
}

pub struct EagerRuntime {
    exported: ExportedModel,
}

impl EagerRuntime {
    pub fn open(graph: &Path) -> flashctl_validate::Result<Self> {
        ExportedModel::open(graph)
            .map(|exported| Self { exported })
            .map_err(|reason| ValidateError::Unavailable {
                runtime: "candle".into(),
                reason,
            })
    }
}

impl Runtime for EagerRuntime {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn prepare(&mut self, _onnx: &[u8], _example: &[HostTensor]) -> flashctl_validate::Result<()> {
        self.exported
            .network()
            .map(|_| ())
            .map_err(|reason| self.failed(reason))
    }

    fn run(&mut self, inputs: &[HostTensor]) -> flashctl_validate::Result<Vec<HostTensor>> {
        let fail = |e: String| self.failed(e);
        let net = self.exported.network().map_err(fail)?;
        let xs = self.exported.input_tensors(inputs).map_err(fail)?;
        let refs: Vec<&Tensor> = xs.iter().collect();
        let ops = EagerOps::new(self.exported.model.var_builder(&Device::Cpu));
        let y = net
            .run(&ops, &refs)
            .and_then(|y| {
                Ok(y.flatten_all()?
                    .to_vec1::<f32>()
                    .map(|v| (y.dims().to_vec(), v))?)
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(vec![HostTensor::f32(net.output_name(), y.0, y.1)])
    }

    fn provider(&self) -> String {
        format!("candle-cpu (eager, {})", self.exported.model.dir.display())
    }
}

impl EagerRuntime {
    fn failed(&self, reason: String) -> ValidateError {
        ValidateError::Failed {
            runtime: "candle".into(),
            reason,
        }
    }
}
