//! Teachers flashctl can run: a model directory (flashctl's own or diffusers') in candle, or a
//! black-box ONNX denoiser with a JSON sidecar, run forward only in tract or ONNX Runtime.
//!
//! Everything downstream (`teacher run`, `sample --inputs`, distillation targets, pair
//! generation) goes through [`Teacher::denoise`] and [`Teacher::sample`], so a teacher's source
//! never matters past this module.

use crate::checkpoint::{self, LoadedModel};
use crate::sampler::{self, SamplerPlan};
use crate::schedule::ScheduleConfig;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_graphs::{EagerOps, GraphError};
use flashctl_validate::{runtime_by_name, HostTensor, Runtime};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Sidecar of an ONNX teacher: `NAME.onnx` is described by `NAME.teacher.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSidecar {
    pub schema_version: u32,
    /// A diffusers DDPM/DDIM scheduler config (its `prediction_type` says what the graph outputs).
    pub scheduler: serde_json::Map<String, serde_json::Value>,
    pub inputs: OnnxInputNames,
    /// Output holding the denoiser prediction (default: the graph's first output).
    #[serde(default)]
    pub output: Option<String>,
    /// Shape of one sample without batch (default: the graph input's shape when fully known).
    #[serde(default)]
    pub sample_shape: Option<Vec<usize>>,
    /// Number of classes when the graph takes class labels.
    #[serde(default)]
    pub num_classes: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxInputNames {
    pub sample: String,
    pub timestep: String,
    #[serde(default)]
    pub class_labels: Option<String>,
}

pub fn sidecar_path(graph: &Path) -> PathBuf {
    graph.with_extension("teacher.json")
}

/// How the graph wants its timestep: its element type and whether it is [B], [1] or a scalar.
#[derive(Debug, Clone, Copy)]
struct TimestepInput {
    int64: bool,
    rank0: bool,
    fixed_one: bool,
}

pub struct OnnxTeacher {
    pub graph: PathBuf,
    pub sidecar: OnnxSidecar,
    pub schedule: ScheduleConfig,
    pub sample_shape: Vec<usize>,
    pub runtime_name: String,
    timestep: TimestepInput,
    label_int64: bool,
    output_index: usize,
    runtime: RefCell<Box<dyn Runtime>>,
}

pub enum Teacher {
    Native(Box<LoadedModel>),
    Onnx(Box<OnnxTeacher>),
}

impl Teacher {
    /// A model directory (flashctl or diffusers) or an `.onnx` file with its sidecar; `runtime`
    /// is used for ONNX teachers only.
    pub fn open(path: &Path, runtime: &str) -> Result<Teacher> {
        Self::open_on(path, runtime, &Device::Cpu)
    }

    /// As [`Teacher::open`], with a model directory's weights loaded once onto `device` (its
    /// calls then run there). An ONNX teacher runs in its runtime whatever the device; its
    /// outputs are copied to the device of its inputs.
    pub fn open_on(path: &Path, runtime: &str, device: &Device) -> Result<Teacher> {
        if path.extension().is_some_and(|e| e == "onnx") {
            return Ok(Teacher::Onnx(Box::new(OnnxTeacher::open(path, runtime)?)));
        }
        Ok(Teacher::Native(Box::new(checkpoint::load(path, device)?)))
    }

    pub fn schedule(&self) -> &ScheduleConfig {
        match self {
            Teacher::Native(m) => &m.config.schedule,
            Teacher::Onnx(o) => &o.schedule,
        }
    }

    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Teacher::Native(m) => m.config.denoiser.sample_shape(),
            Teacher::Onnx(o) => o.sample_shape.clone(),
        }
    }

    pub fn num_classes(&self) -> Option<usize> {
        match self {
            Teacher::Native(m) => m.config.denoiser.num_classes(),
            Teacher::Onnx(o) => o.sidecar.num_classes,
        }
    }

    /// The sampler this teacher runs: a model directory's own default (or overrides); DDIM with
    /// the sidecar's scheduler for an ONNX teacher.
    pub fn plan(
        &self,
        steps: Option<usize>,
        kind: Option<crate::sampler::SamplerKind>,
    ) -> Result<SamplerPlan> {
        match self {
            Teacher::Native(m) => m.config.sampler_plan(steps, kind),
            Teacher::Onnx(o) => {
                let steps = steps.unwrap_or(50);
                let kind = kind.unwrap_or(crate::sampler::SamplerKind::Ddim);
                crate::sampler::plan(kind, &o.schedule, steps)
                    .map_err(|e| anyhow!("{steps} {kind} steps: {e}"))
            }
        }
    }

    /// sha256 over the teacher's weights (by sorted name) or its ONNX graph: identifies the
    /// teacher whatever path it was opened from.
    pub fn fingerprint(&self) -> Result<String> {
        let mut bytes = vec![];
        match self {
            Teacher::Native(m) => return m.fingerprint(),
            Teacher::Onnx(o) => bytes = crate::fsx::read(&o.graph)?,
        }
        Ok(crate::checkpoint::sha256_hex(&bytes))
    }

    /// Human description for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Teacher::Native(m) => format!("{} (candle)", m.dir.display()),
            Teacher::Onnx(o) => format!("{} ({})", o.graph.display(), o.runtime_name),
        }
    }

    /// Check x [B, ...sample shape], t [B] or [1], labels [B] against this teacher.
    fn check_inputs(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<()> {
        let want = self.sample_shape();
        if x.rank() != want.len() + 1 || x.dims()[1..] != want[..] {
            bail!(
                "x has shape {:?}, the teacher expects [B, {}]",
                x.dims(),
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let b = x.dims()[0];
        if t.rank() != 1 || (t.dims()[0] != b && t.dims()[0] != 1) {
            bail!("t has shape {:?}, expected [{b}] or [1]", t.dims());
        }
        match (self.num_classes(), labels) {
            (Some(_), None) => {
                bail!("this teacher is class-conditional: class_labels are required")
            }
            (None, Some(_)) => bail!("class_labels given, but this teacher is unconditional"),
            (Some(k), Some(l)) => {
                if l.dims() != [b] {
                    bail!("class_labels has shape {:?}, expected [{b}]", l.dims());
                }
                let v = l.to_dtype(DType::I64)?.to_vec1::<i64>()?;
                if let Some(bad) = v.iter().find(|&&c| c < 0 || c as usize >= k) {
                    bail!("class label {bad} outside 0..{k}");
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// One denoiser call, no gradient: x [B, ...], t [B] or [1] float, labels [B] int64.
    pub fn denoise(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.check_inputs(x, t, labels)?;
        let t = t.to_dtype(DType::F32)?;
        let labels = labels.map(|l| l.to_dtype(DType::I64)).transpose()?;
        match self {
            Teacher::Native(m) => {
                let ops = EagerOps::new(m.var_builder(x.device()));
                Ok(m.config.denoiser.forward(&ops, x, &t, labels.as_ref())?)
            }
            Teacher::Onnx(o) => Ok(o.denoise(x, &t, labels.as_ref())?.to_device(x.device())?),
        }
    }

    /// Run `plan` from `noise` (scaled by the plan's init sigma) with this teacher, no gradient.
    pub fn sample(
        &self,
        plan: &SamplerPlan,
        noise: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t0 = Tensor::zeros(1, DType::F32, noise.device())?;
        self.check_inputs(noise, &t0, labels)?;
        let labels = labels.map(|l| l.to_dtype(DType::I64)).transpose()?;
        match self {
            Teacher::Native(m) => {
                let ops = EagerOps::new(m.var_builder(noise.device()));
                Ok(sampler::sample(
                    &ops,
                    &m.config.denoiser,
                    plan,
                    noise,
                    labels.as_ref(),
                )?)
            }
            Teacher::Onnx(o) => {
                let ops = EagerOps::new(candle_nn::VarBuilder::zeros(DType::F32, noise.device()));
                Ok(sampler::sample_with(&ops, plan, noise, |x, t| {
                    o.denoise(x, t, labels.as_ref())
                        .and_then(|y| Ok(y.to_device(x.device())?))
                        .map_err(|e| GraphError::Invalid(format!("{e:#}")))
                })?)
            }
        }
    }
}

impl OnnxTeacher {
    pub fn open(graph: &Path, runtime: &str) -> Result<OnnxTeacher> {
        let bytes = std::fs::read(graph)
            .with_context(|| format!("reading ONNX teacher {}", graph.display()))?;
        let model = flashctl_exporters::decode_model(&bytes)
            .map_err(|e| anyhow!("{}: {e}", graph.display()))?;
        let sidecar_file = sidecar_path(graph);
        let text = std::fs::read_to_string(&sidecar_file).with_context(|| {
            format!(
                "reading the ONNX teacher's sidecar {} (see docs/teachers.md)",
                sidecar_file.display()
            )
        })?;
        let sidecar: OnnxSidecar = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: invalid sidecar: {e}", sidecar_file.display()))?;
        if sidecar.schema_version != 1 {
            bail!(
                "{}: schema_version {} (this flashctl reads 1)",
                sidecar_file.display(),
                sidecar.schema_version
            );
        }
        let schedule = crate::diffusers::parse_scheduler_config(&sidecar.scheduler)
            .map_err(|e| anyhow!("{}: {e}", sidecar_file.display()))?;
        let g = model
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("{}: the model has no graph", graph.display()))?;
        let find = |name: &str| {
            g.input.iter().find(|i| i.name == name).ok_or_else(|| {
                anyhow!(
                    "{}: the sidecar names input `{name}`, the graph has {:?}",
                    graph.display(),
                    g.input.iter().map(|i| &i.name).collect::<Vec<_>>()
                )
            })
        };
        let dims = |v: &flashctl_exporters::pb::ValueInfoProto| {
            flashctl_exporters::summary::tensor_signature(v).unwrap_or((0, vec![]))
        };
        const FLOAT: i32 = 1;
        const INT64: i32 = 7;
        let (x_ty, x_dims) = dims(find(&sidecar.inputs.sample)?);
        if x_ty != FLOAT {
            bail!(
                "{}: input `{}` must be float32",
                graph.display(),
                sidecar.inputs.sample
            );
        }
        let sample_shape = match &sidecar.sample_shape {
            Some(s) => s.clone(),
            None => x_dims
                .iter()
                .skip(1)
                .copied()
                .collect::<Option<Vec<_>>>()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: the graph's `{}` shape is not fully known; give sample_shape in the sidecar",
                        graph.display(),
                        sidecar.inputs.sample
                    )
                })?,
        };
        let (t_ty, t_dims) = dims(find(&sidecar.inputs.timestep)?);
        if t_ty != FLOAT && t_ty != INT64 {
            bail!(
                "{}: timestep input `{}` must be float32 or int64",
                graph.display(),
                sidecar.inputs.timestep
            );
        }
        let timestep = TimestepInput {
            int64: t_ty == INT64,
            rank0: t_dims.is_empty(),
            fixed_one: t_dims == [Some(1)],
        };
        let mut label_int64 = true;
        match (&sidecar.inputs.class_labels, sidecar.num_classes) {
            (Some(name), Some(_)) => label_int64 = dims(find(name)?).0 == INT64,
            (Some(_), None) => bail!(
                "{}: class_labels input named but num_classes missing",
                sidecar_file.display()
            ),
            (None, Some(_)) => bail!(
                "{}: num_classes given but no class_labels input named",
                sidecar_file.display()
            ),
            (None, None) => {}
        }
        let outputs: Vec<&String> = g.output.iter().map(|o| &o.name).collect();
        let output_index = match &sidecar.output {
            None => 0,
            Some(name) => outputs.iter().position(|o| *o == name).ok_or_else(|| {
                anyhow!(
                    "{}: output `{name}` not in the graph ({outputs:?})",
                    graph.display()
                )
            })?,
        };
        let mut rt = runtime_by_name(runtime)?;
        let example = vec![
            HostTensor::f32(&sidecar.inputs.sample, vec![1], vec![0.0]),
            HostTensor::f32(&sidecar.inputs.timestep, vec![1], vec![0.0]),
        ]
        .into_iter()
        .chain(
            sidecar
                .inputs
                .class_labels
                .as_ref()
                .map(|n| HostTensor::i64(n, vec![1], vec![0])),
        )
        .collect::<Vec<_>>();
        rt.prepare(&bytes, &example)
            .map_err(|e| anyhow!("{}: {e}", graph.display()))?;
        Ok(OnnxTeacher {
            graph: graph.to_path_buf(),
            schedule,
            sample_shape,
            runtime_name: runtime.to_string(),
            timestep,
            label_int64,
            output_index,
            sidecar,
            runtime: RefCell::new(rt),
        })
    }

    fn denoise(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let b = x.dims()[0];
        let names = &self.sidecar.inputs;
        let mut inputs = vec![HostTensor::f32(
            &names.sample,
            x.dims().to_vec(),
            x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
        )];
        let mut tv = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let ts = self.timestep;
        if ts.rank0 || ts.fixed_one {
            if tv.iter().any(|&v| v != tv[0]) {
                bail!("this ONNX teacher takes one timestep per call; got differing timesteps in a batch");
            }
            tv.truncate(1);
        } else if tv.len() == 1 && b != 1 {
            tv = vec![tv[0]; b];
        }
        let tshape = if ts.rank0 { vec![] } else { vec![tv.len()] };
        inputs.push(if ts.int64 {
            HostTensor::i64(
                &names.timestep,
                tshape,
                tv.iter().map(|v| v.round() as i64).collect(),
            )
        } else {
            HostTensor::f32(&names.timestep, tshape, tv)
        });
        if let (Some(name), Some(l)) = (&names.class_labels, labels) {
            let v = l.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            inputs.push(if self.label_int64 {
                HostTensor::i64(name, vec![b], v)
            } else {
                HostTensor::f32(name, vec![b], v.iter().map(|&c| c as f32).collect())
            });
        }
        let outs = self
            .runtime
            .borrow_mut()
            .run(&inputs)
            .map_err(|e| anyhow!("ONNX teacher {}: {e}", self.graph.display()))?;
        let out = outs.get(self.output_index).ok_or_else(|| {
            anyhow!(
                "ONNX teacher {}: output {} missing",
                self.graph.display(),
                self.output_index
            )
        })?;
        if out.shape != x.dims() {
            bail!(
                "ONNX teacher {}: output `{}` has shape {:?}, expected {:?} (the input's)",
                self.graph.display(),
                out.name,
                out.shape,
                x.dims()
            );
        }
        let v: Vec<f32> = out.values_f64().into_iter().map(|v| v as f32).collect();
        Ok(Tensor::from_vec(v, out.shape.clone(), x.device())?)
    }
}
