//! Rewrites of a traced graph into the form a receiving runtime runs best: the same function,
//! fewer and larger kernels.
//!
//! The network is written (and traced) once, with its composites (`ops::group_norm_composite`
//! and friends); a rewrite recognises one composite's exact subgraph and replaces it with the
//! single ONNX op a target runs as one kernel. It runs after the precision pass, and it counts
//! what it replaced so a caller can check that every instance was found.

use crate::ir::{DType, Dim, Graph, Initializer, Node, Op, TensorData};
use std::collections::{HashMap, HashSet};

/// How a group norm's statistics reach the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupNormForm {
    /// ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div over [B, G, C/G*H*W]: accepted everywhere
    /// (NNAPI and ORT's mobile package included), seven kernels in most runtimes.
    #[default]
    Composite,
    /// InstanceNormalization over the same [B, G, C/G*H*W] view with unit scale and zero
    /// bias (the form torch.onnx emits): one kernel in ONNX Runtime, accepted by TensorRT 10.
    InstanceNorm,
}

/// How nearest-neighbour 2x upsampling reaches the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpsampleForm {
    /// reshape to [B, C, H, 1, W, 1] x ones[1, 1, 1, 2, 1, 2] -> reshape: exact everywhere, but
    /// a 6-D broadcast multiply (ONNX Runtime: the largest Mul of a UNet step, measured)
    #[default]
    BroadcastMul,
    /// `Resize` nearest with `asymmetric` coordinates and `floor` rounding at scales
    /// [1, 1, 2, 2]: out[i] = in[i / 2], the same values; one kernel in ONNX Runtime
    Resize,
}

/// The per-op forms one export uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lowering {
    pub group_norm: GroupNormForm,
    pub upsample: UpsampleForm,
}

/// What [`Lowering::apply`] replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrites {
    pub group_norms: usize,
    pub upsamples: usize,
}

impl Lowering {
    pub fn apply(&self, g: Graph) -> (Graph, Rewrites) {
        let (g, group_norms) = match self.group_norm {
            GroupNormForm::Composite => (g, 0),
            GroupNormForm::InstanceNorm => group_norm_stats_to_instance_norm(g),
        };
        let (g, upsamples) = match self.upsample {
            UpsampleForm::BroadcastMul => (g, 0),
            UpsampleForm::Resize => upsample_broadcast_to_resize(g),
        };
        (
            g,
            Rewrites {
                group_norms,
                upsamples,
            },
        )
    }
}

/// Value producers, use counts (graph outputs count as uses) and initializers by name.
struct Index<'g> {
    producer: HashMap<&'g str, usize>,
    uses: HashMap<&'g str, usize>,
    inits: HashMap<&'g str, &'g Initializer>,
}

impl<'g> Index<'g> {
    fn new(g: &'g Graph) -> Self {
        let producer = g
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for s in g.nodes.iter().flat_map(|n| n.inputs.iter()) {
            *uses.entry(s.as_str()).or_default() += 1;
        }
        for o in &g.outputs {
            *uses.entry(o.name.as_str()).or_default() += 1;
        }
        let inits = g
            .initializers
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        Self {
            producer,
            uses,
            inits,
        }
    }
}

/// Replace the nodes `removed` and put `replacement[i]` where node i was; drop the value info
/// of values no longer produced and initializers no node reads.
fn splice(g: &mut Graph, removed: &HashSet<usize>, mut replacement: HashMap<usize, Node>) {
    let nodes = std::mem::take(&mut g.nodes);
    g.nodes = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| match replacement.remove(&i) {
            Some(r) => Some(r),
            None if removed.contains(&i) => None,
            None => Some(n),
        })
        .collect();
    let produced: HashSet<String> = g.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
    let inputs: HashSet<String> = g.inputs.iter().map(|v| v.name.clone()).collect();
    g.value_info
        .retain(|v| produced.contains(&v.name) || inputs.contains(&v.name));
    let used: HashSet<String> = g.nodes.iter().flat_map(|n| n.inputs.clone()).collect();
    g.initializers.retain(|i| used.contains(&i.name));
}

/// Replace every `Reshape(Reshape(x, [0, C, H, 1, W, 1]) * ones[1, 1, 1, 2, 1, 2], [0, C, 2H,
/// 2W])` (the composite `Ops::upsample_nearest2x`) by `Resize(x, scales [1, 1, 2, 2])`.
pub fn upsample_broadcast_to_resize(mut g: Graph) -> (Graph, usize) {
    const SCALES: &str = "lowering/resize_scales_1_1_2_2";
    let ix = Index::new(&g);
    let ones_1_1_1_2_1_2 = |name: &str| {
        ix.inits.get(name).is_some_and(|i| {
            i.dims == [1, 1, 1, 2, 1, 2]
                && match &i.data {
                    TensorData::F32(v) => v.iter().all(|&x| x == 1.0),
                    TensorData::F16(v) => {
                        v.iter().all(|&x| half::f16::from_bits(x).to_f32() == 1.0)
                    }
                    TensorData::I64(_) => false,
                }
        })
    };
    let shape_of = |name: &str| match &ix.inits.get(name)?.data {
        TensorData::I64(v) => Some(v.clone()),
        _ => None,
    };
    let mut removed = HashSet::new();
    let mut replacement = HashMap::new();
    for (last, n) in g.nodes.iter().enumerate() {
        let first_mul = (|| -> Option<(usize, usize)> {
            if n.op != Op::Reshape {
                return None;
            }
            let mul = *ix.producer.get(n.inputs[0].as_str())?;
            let mn = &g.nodes[mul];
            if mn.op != Op::Mul || !ones_1_1_1_2_1_2(mn.inputs.get(1)?) {
                return None;
            }
            let first = *ix.producer.get(mn.inputs[0].as_str())?;
            let fnode = &g.nodes[first];
            let (a, b) = (shape_of(fnode.inputs.get(1)?)?, shape_of(n.inputs.get(1)?)?);
            let ok = fnode.op == Op::Reshape
                && matches!(a.as_slice(), [0, c, h, 1, w, 1] if b == [0, *c, 2 * h, 2 * w])
                && ix.uses.get(mn.inputs[0].as_str()) == Some(&1)
                && ix.uses.get(n.inputs[0].as_str()) == Some(&1);
            ok.then_some((first, mul))
        })();
        let Some((first, mul)) = first_mul else {
            continue;
        };
        removed.extend([first, mul]);
        let scope = n.name.rsplit_once('/').map_or("", |(s, _)| s);
        replacement.insert(
            last,
            Node {
                name: format!("{scope}/Resize_0"),
                op: Op::ResizeNearest,
                inputs: vec![
                    g.nodes[first].inputs[0].clone(),
                    String::new(),
                    SCALES.into(),
                ],
                outputs: n.outputs.clone(),
            },
        );
    }
    let count = replacement.len();
    if count > 0 {
        g.initializers.push(Initializer {
            name: SCALES.into(),
            dims: vec![4],
            data: TensorData::F32(vec![1.0, 1.0, 2.0, 2.0]),
        });
        splice(&mut g, &removed, replacement);
    }
    (g, count)
}

fn scalar_value(init: &Initializer) -> Option<f32> {
    match &init.data {
        TensorData::F32(v) if v.len() == 1 => Some(v[0]),
        TensorData::F16(v) if v.len() == 1 => Some(half::f16::from_bits(v[0]).to_f32()),
        _ => None,
    }
}

/// One matched statistics subgraph: the indices of its seven nodes, the grouped input, the
/// output and the epsilon.
struct Match {
    nodes: [usize; 7],
    grouped: String,
    groups: usize,
    dtype: DType,
    epsilon: f32,
}

/// Replace every `(r - mean(r)) / sqrt(mean((r - mean(r))^2) + eps)` over the last axis of a
/// rank-3 `r` by `InstanceNormalization(r, 1, 0, eps)`; returns the graph and the count.
pub fn group_norm_stats_to_instance_norm(mut g: Graph) -> (Graph, usize) {
    let ix = Index::new(&g);
    let (producer, uses, inits) = (&ix.producer, &ix.uses, &ix.inits);
    let types: HashMap<&str, (&[Dim], DType)> = g
        .value_info
        .iter()
        .chain(&g.inputs)
        .map(|v| (v.name.as_str(), (v.shape.as_slice(), v.dtype)))
        .collect();
    let last_axis_mean = |i: usize, input: &str| {
        let n = &g.nodes[i];
        matches!(&n.op, Op::ReduceMean { axes, keepdims: true } if axes == &[2] || axes == &[-1])
            && n.inputs == [input]
    };
    let single_use = |v: &str| uses.get(v) == Some(&1);
    let from =
        |v: &str, op: fn(&Op) -> bool| producer.get(v).copied().filter(|&i| op(&g.nodes[i].op));

    let mut found: Vec<Match> = vec![];
    for (div, n) in g.nodes.iter().enumerate() {
        let m = (|| -> Option<Match> {
            if n.op != Op::Div || n.inputs.len() != 2 {
                return None;
            }
            let (c, s) = (n.inputs[0].as_str(), n.inputs[1].as_str());
            let sub = from(c, |o| *o == Op::Sub)?;
            let (r, mean) = (
                g.nodes[sub].inputs[0].as_str(),
                g.nodes[sub].inputs[1].as_str(),
            );
            let mean_i = producer.get(mean).copied()?;
            let sqrt = from(s, |o| *o == Op::Sqrt)?;
            let add = from(&g.nodes[sqrt].inputs[0], |o| *o == Op::Add)?;
            let [v, eps] = g.nodes[add].inputs.as_slice() else {
                return None;
            };
            let epsilon = scalar_value(inits.get(eps.as_str())?)?;
            let var_i = producer.get(v.as_str()).copied()?;
            let sq = g.nodes[var_i].inputs.first()?.as_str();
            let sq_i = from(sq, |o| *o == Op::Mul)?;
            let (shape, dtype) = *types.get(r)?;
            let groups = match shape {
                [_, Dim::Known(groups), _] => *groups,
                _ => return None,
            };
            let ok = last_axis_mean(mean_i, r)
                && last_axis_mean(var_i, sq)
                && g.nodes[sq_i].inputs == [c, c]
                && uses.get(c) == Some(&3)
                && [mean, sq, v.as_str(), &g.nodes[add].outputs[0], s]
                    .iter()
                    .all(|x| single_use(x))
                && matches!(dtype, DType::F32 | DType::F16);
            ok.then(|| Match {
                nodes: [mean_i, sub, sq_i, var_i, add, sqrt, div],
                grouped: r.to_string(),
                groups,
                dtype,
                epsilon,
            })
        })();
        found.extend(m);
    }
    if found.is_empty() {
        return (g, 0);
    }
    let count = found.len();
    let removed: HashSet<usize> = found.iter().flat_map(|m| m.nodes).collect();
    let mut replacement: HashMap<usize, Node> = HashMap::new();
    let mut new_inits: Vec<Initializer> = vec![];
    for m in &found {
        let div = &g.nodes[m.nodes[6]];
        let suffix = match m.dtype {
            DType::F16 => "f16",
            _ => "f32",
        };
        let names = [
            format!("lowering/instance_norm_scale_{}_{suffix}", m.groups),
            format!("lowering/instance_norm_bias_{}_{suffix}", m.groups),
        ];
        for (name, value) in names.iter().zip([1.0f32, 0.0]) {
            if !new_inits.iter().any(|i| &i.name == name) {
                new_inits.push(Initializer {
                    name: name.clone(),
                    dims: vec![m.groups],
                    data: match m.dtype {
                        DType::F16 => {
                            TensorData::F16(vec![half::f16::from_f32(value).to_bits(); m.groups])
                        }
                        _ => TensorData::F32(vec![value; m.groups]),
                    },
                });
            }
        }
        let name = match div.name.rsplit_once('/') {
            Some((scope, last)) => format!(
                "{scope}/InstanceNormalization{}",
                last.trim_start_matches("Div")
            ),
            None => format!("InstanceNormalization_{}", div.name),
        };
        replacement.insert(
            m.nodes[6],
            Node {
                name,
                op: Op::InstanceNormalization { epsilon: m.epsilon },
                inputs: vec![m.grouped.clone(), names[0].clone(), names[1].clone()],
                outputs: div.outputs.clone(),
            },
        );
    }
    g.initializers.extend(new_inits);
    splice(&mut g, &removed, replacement);
    (g, count)
}
