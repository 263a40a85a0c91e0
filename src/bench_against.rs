//! `flashctl bench --against OTHER.onnx`: another exporter's graph of the same model (torch.onnx,
//! Optimum, a hand-tuned one), timed interleaved with flashctl's in the same runtime and run,
//! after checking on the same inputs that both compute the same function.
//!
//! OTHER with a timestep input is one denoiser call and is compared with flashctl's exported
//! denoiser call; without one it is a whole sampler and is compared with the K-step graph.
//! Inputs are matched by name (`sample`/`x`/`noise`/`latents`, `timestep`/`timesteps`/`t`,
//! `class_labels`/`labels`/`y`), else by type: the first float input of rank >= 2 is the sample,
//! then a rank-0/1 float or int is the timestep and a rank-1 int the class labels.

use crate::bench::{stats, Latency};
use crate::validation::BadInput;
use anyhow::{Context, Result};
use flashctl_exporters::pb;
use flashctl_validate::{HostData, HostTensor, Runtime};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Relative difference above which the two graphs are reported as different functions.
const SAME_FUNCTION_RTOL: f64 = 1e-3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Sample,
    Timestep,
    Labels,
}

#[derive(Debug)]
struct Input {
    name: String,
    role: Role,
    int64: bool,
    dims: Vec<Option<usize>>,
}

/// The other graph's inputs, each with the role flashctl's inputs fill.
#[derive(Debug)]
pub struct OtherGraph {
    pub path: PathBuf,
    inputs: Vec<Input>,
    pub nodes: usize,
}

#[derive(Debug, Serialize)]
pub struct AgainstBatch {
    pub batch: usize,
    pub flashctl: Latency,
    pub other: Latency,
    /// flashctl p50 / other p50 (below 1: flashctl's graph is faster)
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct AgainstReport {
    pub graph: String,
    /// which of flashctl's graphs it is timed against
    pub compared_with: String,
    pub nodes: usize,
    pub flashctl_nodes: usize,
    /// first outputs on the same inputs at the first batch size
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
    pub same_function: bool,
    pub per_batch: Vec<AgainstBatch>,
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;
const INT32: i32 = pb::tensor_proto::DataType::Int32 as i32;

fn role_by_name(name: &str) -> Option<Role> {
    match name.to_ascii_lowercase().as_str() {
        "sample" | "x" | "noise" | "latents" | "latent" | "x_t" | "input" => Some(Role::Sample),
        "timestep" | "timesteps" | "t" | "time" => Some(Role::Timestep),
        "class_labels" | "class_label" | "labels" | "label" | "y" => Some(Role::Labels),
        _ => None,
    }
}

impl OtherGraph {
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |msg: String| BadInput(format!("--against {}: {msg}", path.display()));
        let m = flashctl_exporters::decode_model(&crate::fsx::read(path)?)
            .map_err(|e| bad(e.to_string()))?;
        let g = m.graph.ok_or_else(|| bad("no graph".into()))?;
        let initializers: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut inputs: Vec<Input> = vec![];
        for v in g
            .input
            .iter()
            .filter(|v| !initializers.contains(v.name.as_str()))
        {
            let (ty, dims) = flashctl_exporters::summary::tensor_signature(v)
                .ok_or_else(|| bad(format!("input `{}` is not a typed tensor", v.name)))?;
            let taken = |r: Role| inputs.iter().any(|i| i.role == r);
            let role = role_by_name(&v.name)
                .filter(|r| !taken(*r))
                .or_else(|| match (ty, dims.len()) {
                    (FLOAT, n) if n >= 2 && !taken(Role::Sample) => Some(Role::Sample),
                    (FLOAT | INT64 | INT32, 0 | 1) if !taken(Role::Timestep) => {
                        Some(Role::Timestep)
                    }
                    (INT64 | INT32, 1) if !taken(Role::Labels) => Some(Role::Labels),
                    _ => None,
                })
                .ok_or_else(|| {
                    bad(format!(
                        "input `{}` is none of sample, timestep, class labels",
                        v.name
                    ))
                })?;
            let int64 = match (role, ty) {
                (Role::Sample, FLOAT) | (Role::Timestep, FLOAT) => false,
                (Role::Timestep | Role::Labels, INT64) => true,
                _ => {
                    return Err(bad(format!(
                        "input `{}` ({role:?}) has element type {ty}; bench feeds float32 samples \
                         and float32 or int64 timesteps and labels",
                        v.name
                    ))
                    .into())
                }
            };
            inputs.push(Input {
                name: v.name.clone(),
                role,
                int64,
                dims,
            });
        }
        if !inputs.iter().any(|i| i.role == Role::Sample) {
            return Err(bad("no sample input (a float tensor of rank >= 2)".into()).into());
        }
        Ok(Self {
            path: path.to_path_buf(),
            inputs,
            nodes: g.node.len(),
        })
    }

    /// One denoiser call (it takes a timestep) rather than a whole sampler.
    pub fn is_denoiser_call(&self) -> bool {
        self.inputs.iter().any(|i| i.role == Role::Timestep)
    }

    /// OTHER's inputs carrying the values of flashctl's (`x`/`noise`, `t`, `class_labels`).
    pub fn inputs_from(&self, ours: &[HostTensor], batch: usize) -> Result<Vec<HostTensor>> {
        let bad = |msg: String| BadInput(format!("--against {}: {msg}", self.path.display()));
        let find = |names: &[&str]| ours.iter().find(|t| names.contains(&t.name.as_str()));
        if find(&["class_labels"]).is_some() && !self.inputs.iter().any(|i| i.role == Role::Labels)
        {
            return Err(
                bad("--model is class-conditional, this graph takes no labels".into()).into(),
            );
        }
        let mut out = vec![];
        for i in &self.inputs {
            let src = match i.role {
                Role::Sample => find(&["x", "noise"]),
                Role::Timestep => find(&["t"]),
                Role::Labels => find(&["class_labels"]),
            }
            .ok_or_else(|| {
                bad(format!(
                    "input `{}` ({:?}) has no counterpart in --model's graph",
                    i.name, i.role
                ))
            })?;
            if i.role == Role::Sample {
                let fits = i.dims.len() == src.shape.len()
                    && i.dims
                        .iter()
                        .zip(&src.shape)
                        .all(|(w, g)| w.is_none_or(|w| w == *g));
                if !fits {
                    let want: Vec<String> = i
                        .dims
                        .iter()
                        .map(|d| d.map_or("?".into(), |n| n.to_string()))
                        .collect();
                    let hint = match i.dims.first() {
                        Some(Some(n)) if *n != batch => format!(
                            " (a fixed batch of {n}: bench it with --batch {n}, or export it with \
                             a dynamic batch axis)"
                        ),
                        _ => String::new(),
                    };
                    return Err(bad(format!(
                        "input `{}` is [{}], --model's sample at batch {batch} is {:?}{hint}",
                        i.name,
                        want.join(","),
                        src.shape
                    ))
                    .into());
                }
            }
            let values: Vec<f32> = match &src.data {
                HostData::F32(v) => v.clone(),
                HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            };
            // a scalar or batch-1 timestep takes the first value (bench feeds one t per batch)
            let (shape, values) = match (i.role, i.dims.as_slice()) {
                (Role::Timestep, []) => (vec![], values[..1].to_vec()),
                (Role::Timestep, [Some(1)]) => (vec![1], values[..1].to_vec()),
                _ => (src.shape.clone(), values),
            };
            out.push(if i.int64 {
                HostTensor::i64(&i.name, shape, values.iter().map(|&v| v as i64).collect())
            } else {
                HostTensor::f32(&i.name, shape, values)
            });
        }
        Ok(out)
    }
}

fn first_f32(out: &[HostTensor], what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = out
        .first()
        .with_context(|| format!("{what} has no output"))?;
    match &t.data {
        HostData::F32(v) => Ok((t.shape.clone(), v.clone())),
        HostData::I64(_) => anyhow::bail!("{what}'s first output `{}` is not float32", t.name),
    }
}

/// Max absolute and relative (to the largest |value| of flashctl's) difference of the two
/// graphs' first outputs on the same inputs.
pub fn difference(
    ours: &mut dyn Runtime,
    ours_in: &[HostTensor],
    other: &mut dyn Runtime,
    other_in: &[HostTensor],
    other_path: &Path,
) -> Result<(f64, f64)> {
    let (sa, a) = first_f32(&ours.run(ours_in)?, "flashctl's graph")?;
    let (sb, b) = first_f32(&other.run(other_in)?, "--against")?;
    if sa != sb {
        return Err(BadInput(format!(
            "--against {}: first output is {sb:?}, flashctl's is {sa:?}: not the same model",
            other_path.display()
        ))
        .into());
    }
    let abs = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let scale = a
        .iter()
        .map(|x| x.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-12);
    Ok((abs, abs / scale))
}

/// The two graphs timed run for run, alternating which goes first, after `warmup` runs of each:
/// load and clock drifts land on both.
pub fn time_interleaved(
    a: &mut dyn Runtime,
    a_in: &[HostTensor],
    b: &mut dyn Runtime,
    b_in: &[HostTensor],
    warmup: usize,
    runs: usize,
    batch: usize,
) -> Result<AgainstBatch> {
    for _ in 0..warmup {
        a.run(a_in)?;
        b.run(b_in)?;
    }
    let (mut ta, mut tb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let once = |rt: &mut dyn Runtime, inputs: &[HostTensor]| -> Result<f64> {
        Ok(flashctl_validate::time_ms(0, 1, || rt.run(inputs).map(|_| ()))?[0])
    };
    for i in 0..runs {
        if i % 2 == 0 {
            ta.push(once(a, a_in)?);
            tb.push(once(b, b_in)?);
        } else {
            tb.push(once(b, b_in)?);
            ta.push(once(a, a_in)?);
        }
    }
    let (flashctl, other) = (stats(batch, ta), stats(batch, tb));
    Ok(AgainstBatch {
        batch,
        ratio: flashctl.latency_ms.p50 / other.latency_ms.p50,
        flashctl,
        other,
    })
}

impl AgainstReport {
    pub fn new(
        other: &OtherGraph,
        compared_with: String,
        flashctl_nodes: usize,
        (max_abs_diff, max_rel_diff): (f64, f64),
    ) -> Self {
        Self {
            graph: other.path.display().to_string(),
            compared_with,
            nodes: other.nodes,
            flashctl_nodes,
            max_abs_diff,
            max_rel_diff,
            same_function: max_rel_diff <= SAME_FUNCTION_RTOL,
            per_batch: vec![],
        }
    }

    pub fn print(&self) {
        println!(
            "against {} ({} nodes) vs flashctl's {} ({} nodes), interleaved:",
            self.graph, self.nodes, self.compared_with, self.flashctl_nodes
        );
        println!(
            "  same inputs: max |difference| {:.3e} (relative {:.3e}){}",
            self.max_abs_diff,
            self.max_rel_diff,
            if self.same_function {
                ""
            } else {
                "  WARNING: not the same function, the timing compares different models"
            }
        );
        println!(
            "  {:>6} {:>14} {:>14} {:>10}",
            "batch", "flashctl p50", "other p50", "ratio"
        );
        for b in &self.per_batch {
            println!(
                "  {:>6} {:>11.3} ms {:>11.3} ms {:>9.3}x",
                b.batch, b.flashctl.latency_ms.p50, b.other.latency_ms.p50, b.ratio
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(match d {
                                    Some(n) => Value::DimValue(*n),
                                    None => Value::DimParam("batch".into()),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn graph_file(dir: &Path, inputs: Vec<pb::ValueInfoProto>) -> PathBuf {
        let m = pb::ModelProto {
            graph: Some(pb::GraphProto {
                input: inputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = dir.join("other.onnx");
        std::fs::write(&p, flashctl_exporters::encode_model(&m)).unwrap();
        p
    }

    fn ours(batch: usize) -> Vec<HostTensor> {
        vec![
            HostTensor::f32("x", vec![batch, 1, 4, 4], vec![0.5; batch * 16]),
            HostTensor::f32("t", vec![batch], vec![500.0; batch]),
            HostTensor::i64("class_labels", vec![batch], vec![3; batch]),
        ]
    }

    #[test]
    fn inputs_are_matched_by_name_then_by_type_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let p = graph_file(
            dir.path(),
            vec![
                value_info("img", FLOAT, &[None, Some(1), Some(4), Some(4)]),
                value_info("step", INT64, &[]),
                value_info("class_labels", INT64, &[None]),
            ],
        );
        let g = OtherGraph::read(&p).unwrap();
        assert!(g.is_denoiser_call());
        let got = g.inputs_from(&ours(2), 2).unwrap();
        assert_eq!(got[0].name, "img");
        assert_eq!(got[0].shape, vec![2, 1, 4, 4]);
        assert_eq!(got[1].shape, Vec::<usize>::new());
        assert!(matches!(&got[1].data, HostData::I64(v) if v == &[500]));
        assert!(matches!(&got[2].data, HostData::I64(v) if v == &[3, 3]));
    }

    #[test]
    fn a_fixed_batch_an_unknown_input_and_missing_labels_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fixed = graph_file(
            dir.path(),
            vec![
                value_info("sample", FLOAT, &[Some(1), Some(1), Some(4), Some(4)]),
                value_info("timestep", FLOAT, &[Some(1)]),
                value_info("class_labels", INT64, &[Some(1)]),
            ],
        );
        let g = OtherGraph::read(&fixed).unwrap();
        assert!(g.inputs_from(&ours(1), 1).is_ok());
        let e = g.inputs_from(&ours(4), 4).unwrap_err().to_string();
        assert!(
            e.contains("fixed batch of 1") && e.contains("--batch 1"),
            "{e}"
        );

        let odd = graph_file(
            dir.path(),
            vec![
                value_info("sample", FLOAT, &[None, Some(1), Some(4), Some(4)]),
                value_info("mask", FLOAT, &[None, Some(4), Some(4)]),
            ],
        );
        let e = OtherGraph::read(&odd).unwrap_err().to_string();
        assert!(e.contains("`mask`"), "{e}");

        let unconditional = graph_file(
            dir.path(),
            vec![value_info(
                "sample",
                FLOAT,
                &[None, Some(1), Some(4), Some(4)],
            )],
        );
        let g = OtherGraph::read(&unconditional).unwrap();
        assert!(!g.is_denoiser_call());
        let e = g.inputs_from(&ours(2), 2).unwrap_err().to_string();
        assert!(e.contains("class-conditional"), "{e}");
    }
}
