//! The fp16 export pass: the denoiser's arithmetic in float16, the rest in float32.
//!
//! Runs in float16: every node inside a denoiser call (scope [`DENOISER_SCOPE`]). Stays in
//! float32: the sampler's step arithmetic (coefficients near 1 applied K times), group-norm
//! statistics ([`NORM_STATS_SCOPE`]: sums of squares), the timestep embedding
//! ([`TIMESTEP_EMBEDDING_SCOPE`]: sin/cos of arguments up to ~1000, where fp16 spacing is 0.5)
//! and Softmax. Graph inputs and outputs keep float32, so the signature and the reference do
//! not change. Weights read only by fp16 nodes are stored as fp16; a value crossing a precision
//! boundary gets one Cast, shared by every consumer. An fp16 Gemm is lowered as MatMul with the
//! weight stored transposed (+ Add for the bias): tract 0.23 fails to analyse an f16 Gemm (its
//! alpha/beta rewrite reads the f16 bias as f32; measured).

use crate::ir::{DType, Graph, Initializer, Node, Op, TensorData, ValueInfo};
use crate::ops::{DENOISER_SCOPE, NORM_STATS_SCOPE, TIMESTEP_EMBEDDING_SCOPE};
use std::collections::{HashMap, HashSet};

/// Does this node compute in fp16 under the policy above?
pub fn runs_in_fp16(n: &Node) -> bool {
    let scopes: Vec<&str> = n.name.split('/').collect();
    scopes.contains(&DENOISER_SCOPE)
        && !scopes.contains(&NORM_STATS_SCOPE)
        && !scopes.contains(&TIMESTEP_EMBEDDING_SCOPE)
        && !matches!(n.op, Op::Softmax { .. } | Op::ReduceMean { .. })
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16)
}

pub fn to_fp16(g: &Graph) -> Graph {
    let mut dtype: HashMap<String, DType> = HashMap::new();
    let mut shape: HashMap<String, Vec<crate::ir::Dim>> = HashMap::new();
    for v in g.inputs.iter().chain(&g.value_info).chain(&g.outputs) {
        dtype.insert(v.name.clone(), v.dtype);
        shape.insert(v.name.clone(), v.shape.clone());
    }
    let lowered = lower_fp16_gemms(g);
    let g = &lowered;
    let inits: HashMap<&str, &Initializer> = g
        .initializers
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for i in &g.initializers {
        dtype.insert(i.name.clone(), i.dtype());
    }
    let mut out = Graph {
        name: g.name.clone(),
        inputs: g.inputs.clone(),
        initializers: g.initializers.clone(),
        ..Default::default()
    };
    // (value, target) -> the converted value's name
    let mut converted: HashMap<(String, DType), String> = HashMap::new();
    for n in &g.nodes {
        let target = if runs_in_fp16(n) {
            DType::F16
        } else {
            DType::F32
        };
        let mut node = n.clone();
        if !matches!(n.op, Op::Cast { .. }) {
            for input in node.inputs.iter_mut() {
                let d = dtype.get(input).copied().unwrap_or(DType::F32);
                if !is_float(d) || d == target {
                    continue;
                }
                let key = (input.clone(), target);
                if let Some(name) = converted.get(&key) {
                    *input = name.clone();
                    continue;
                }
                let suffix = if target == DType::F16 { "fp16" } else { "fp32" };
                let name = format!("{input}__{suffix}");
                match inits.get(input.as_str()) {
                    Some(init) if target == DType::F16 => {
                        out.initializers.push(half_initializer(init, &name));
                    }
                    _ => {
                        out.nodes.push(Node {
                            name: format!("{input}/to_{suffix}"),
                            op: Op::Cast { to: target },
                            inputs: vec![input.clone()],
                            outputs: vec![name.clone()],
                        });
                        if let Some(s) = shape.get(input).cloned() {
                            out.value_info.push(ValueInfo {
                                name: name.clone(),
                                dtype: target,
                                shape: s,
                            });
                        }
                    }
                }
                dtype.insert(name.clone(), target);
                converted.insert(key, name.clone());
                *input = name;
            }
        }
        for o in &node.outputs {
            let d = match n.op {
                Op::Cast { to } => to,
                _ if dtype.get(o).copied().is_some_and(|d| !is_float(d)) => dtype[o],
                _ => target,
            };
            dtype.insert(o.clone(), d);
            if let Some(s) = shape.get(o) {
                out.value_info.push(ValueInfo {
                    name: o.clone(),
                    dtype: d,
                    shape: s.clone(),
                });
            }
        }
        out.nodes.push(node);
    }
    // outputs keep float32: a float16 producer hands over through a final Cast
    for o in &g.outputs {
        if dtype.get(&o.name) == Some(&DType::F16) {
            let inner = format!("{}__fp16", o.name);
            for n in out.nodes.iter_mut() {
                for s in n.outputs.iter_mut().chain(n.inputs.iter_mut()) {
                    if *s == o.name {
                        *s = inner.clone();
                    }
                }
            }
            for v in out.value_info.iter_mut().filter(|v| v.name == o.name) {
                v.name = inner.clone();
            }
            out.nodes.push(Node {
                name: format!("output/{}/to_fp32", o.name),
                op: Op::Cast { to: DType::F32 },
                inputs: vec![inner],
                outputs: vec![o.name.clone()],
            });
        }
        out.outputs.push(o.clone());
    }
    out.value_info
        .retain(|v| !g.outputs.iter().any(|o| o.name == v.name));
    let used: HashSet<&String> = out.nodes.iter().flat_map(|n| n.inputs.iter()).collect();
    let used: HashSet<String> = used.into_iter().cloned().collect();
    out.initializers.retain(|i| used.contains(&i.name));
    out
}

/// Every fp16 `Gemm(x, W, b)` with `transB` and an initializer W becomes `MatMul(x, W^T) + b`,
/// W^T a new initializer; the last node keeps the Gemm's name and output.
fn lower_fp16_gemms(g: &Graph) -> Graph {
    let mut out = g.clone();
    out.nodes.clear();
    for n in &g.nodes {
        let w = n
            .inputs
            .get(1)
            .and_then(|w| g.initializers.iter().find(|i| &i.name == w));
        let (Op::Gemm { trans_b: true }, true, Some(w)) = (&n.op, runs_in_fp16(n), w) else {
            out.nodes.push(n.clone());
            continue;
        };
        let TensorData::F32(v) = &w.data else {
            out.nodes.push(n.clone());
            continue;
        };
        let (rows, cols) = (w.dims[0], w.dims[1]);
        let mut t = vec![0f32; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = v[r * cols + c];
            }
        }
        let wt = format!("{}__t", w.name);
        if !out.initializers.iter().any(|i| i.name == wt) {
            out.initializers.push(Initializer {
                name: wt.clone(),
                dims: vec![cols, rows],
                data: TensorData::F32(t),
            });
        }
        let y = n.outputs[0].clone();
        match n.inputs.get(2) {
            Some(b) => {
                let mm = format!("{y}__matmul");
                if let Some(vi) = g.value_info.iter().find(|v| v.name == y) {
                    out.value_info.push(ValueInfo {
                        name: mm.clone(),
                        ..vi.clone()
                    });
                }
                out.nodes.push(Node {
                    name: format!("{}/matmul", n.name),
                    op: Op::MatMul,
                    inputs: vec![n.inputs[0].clone(), wt],
                    outputs: vec![mm.clone()],
                });
                out.nodes.push(Node {
                    name: n.name.clone(),
                    op: Op::Add,
                    inputs: vec![mm, b.clone()],
                    outputs: vec![y],
                });
            }
            None => out.nodes.push(Node {
                name: n.name.clone(),
                op: Op::MatMul,
                inputs: vec![n.inputs[0].clone(), wt],
                outputs: vec![y],
            }),
        }
    }
    out
}

fn half_initializer(init: &Initializer, name: &str) -> Initializer {
    let data = match &init.data {
        TensorData::F32(v) => v
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect(),
        _ => unreachable!("only float32 initializers are converted"),
    };
    Initializer {
        name: name.to_string(),
        dims: init.dims.clone(),
        data: TensorData::F16(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Dim;

    fn node(name: &str, op: Op, inputs: &[&str], out: &str) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
        }
    }

    #[test]
    fn denoiser_nodes_go_fp16_with_one_cast_per_crossing() {
        let f32v = |n: &str| ValueInfo {
            name: n.into(),
            dtype: DType::F32,
            shape: vec![Dim::Batch, Dim::Known(2)],
        };
        let g = Graph {
            name: "g".into(),
            inputs: vec![f32v("x")],
            outputs: vec![f32v("y")],
            nodes: vec![
                node(
                    "step0/denoiser/fc/Gemm_0",
                    Op::Gemm { trans_b: true },
                    &["x", "w"],
                    "h",
                ),
                node("step0/denoiser/Mul_0", Op::Mul, &["h", "x"], "h2"),
                node(
                    "step0/denoiser/norm_stats/ReduceMean_0",
                    Op::ReduceMean {
                        axes: vec![1],
                        keepdims: true,
                    },
                    &["h2"],
                    "m",
                ),
                node("step0/Add_0", Op::Add, &["h2", "m"], "y"),
            ],
            initializers: vec![Initializer {
                name: "w".into(),
                dims: vec![2, 2],
                data: TensorData::F32(vec![1.0, 0.5, 0.25, 2.0]),
            }],
            value_info: vec![f32v("h"), f32v("h2"), f32v("m")],
        };
        let h = to_fp16(&g);
        let casts: Vec<&Node> = h
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Cast { .. }))
            .collect();
        // x -> fp16 once (used by Gemm and Mul), h2 -> fp32 once (ReduceMean and Add)
        assert_eq!(casts.len(), 2, "{:#?}", h.nodes);
        let w = h
            .initializers
            .iter()
            .find(|i| i.name == "w__t__fp16")
            .unwrap();
        assert_eq!(w.dtype(), DType::F16);
        assert_eq!(h.initializers.len(), 1, "fp32 weights dropped");
        let vi = |n: &str| h.value_info.iter().find(|v| v.name == n).unwrap().dtype;
        assert_eq!(vi("h"), DType::F16);
        assert_eq!(vi("m"), DType::F32);
        assert_eq!(h.outputs[0].dtype, DType::F32);
    }
}
