//! The typed graph IR recorded by [`crate::TraceOps`].
//!
//! It is deliberately close to ONNX (nodes in topological order, named values, initializers)
//! so lowering is a one-to-one translation, but it carries no protobuf types: `exporters/`
//! owns that boundary.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    F32,
    F16,
    I64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::I64 => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::I64 => "int64",
        }
    }
}

/// One dimension of a traced value: the symbolic batch, or a size fixed at export time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dim {
    Batch,
    Known(usize),
}

impl Dim {
    pub fn known(self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            Dim::Batch => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => write!(f, "batch"),
            Dim::Known(n) => write!(f, "{n}"),
        }
    }
}

pub fn format_shape(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// The operators the IR can hold. Attributes follow the ONNX (opset 17) meaning of the same name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Op {
    /// inputs: x, w, [b]
    Conv {
        strides: [usize; 2],
        pads: [usize; 4],
    },
    /// inputs: a, b, [c]; y = a @ b^T + c when `trans_b`
    Gemm {
        trans_b: bool,
    },
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Sigmoid,
    Sin,
    Cos,
    Exp,
    Sqrt,
    Neg,
    Erf,
    Identity,
    Softmax {
        axis: i64,
    },
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    /// inputs: x, shape (int64 initializer)
    Reshape,
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: i64,
    },
    /// inputs: data, indices
    Gather {
        axis: i64,
    },
    /// inputs: x, min, max (scalar initializers)
    Clip,
    /// inputs: x, pads (int64 initializer, ONNX order: all begins then all ends)
    Pad,
    Cast {
        to: DType,
    },
    /// inputs: x [N, C, ...], scale [C], bias [C]; only from `lowering` rewrites
    InstanceNormalization {
        epsilon: f32,
    },
    /// inputs: x, roi (""), scales (f32 initializer); nearest, `asymmetric` coordinates, `floor`
    /// rounding (exact for integer scales); only from `lowering` rewrites
    ResizeNearest,
}

impl Op {
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Sigmoid => "Sigmoid",
            Op::Sin => "Sin",
            Op::Cos => "Cos",
            Op::Exp => "Exp",
            Op::Sqrt => "Sqrt",
            Op::Neg => "Neg",
            Op::Erf => "Erf",
            Op::Identity => "Identity",
            Op::Softmax { .. } => "Softmax",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::Reshape => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Gather { .. } => "Gather",
            Op::Clip => "Clip",
            Op::Pad => "Pad",
            Op::Cast { .. } => "Cast",
            Op::InstanceNormalization { .. } => "InstanceNormalization",
            Op::ResizeNearest => "Resize",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Stable, scope-derived name (`step0/down_blocks.0/resnets.0/Conv_1`).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    /// IEEE half precision, as bits
    F16(Vec<u16>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: TensorData,
}

impl Initializer {
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I64(_) => DType::I64,
        }
    }
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len() * 4,
            TensorData::F16(v) => v.len() * 2,
            TensorData::I64(v) => v.len() * 8,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    /// Shapes and dtypes of every intermediate value, for shape annotations and bisection.
    pub value_info: Vec<ValueInfo>,
}

/// What a reviewer wants to see of a graph at a glance; snapshotted in tests.
#[derive(Debug, Clone, Serialize)]
pub struct GraphSummary {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub node_count: usize,
    pub op_histogram: BTreeMap<String, usize>,
    pub initializer_count: usize,
    pub initializer_bytes: usize,
}

impl Graph {
    pub fn summary(&self) -> GraphSummary {
        let sig =
            |v: &ValueInfo| format!("{}: {} {}", v.name, v.dtype.name(), format_shape(&v.shape));
        let mut op_histogram = BTreeMap::new();
        for n in &self.nodes {
            *op_histogram
                .entry(n.op.onnx_name().to_string())
                .or_insert(0) += 1;
        }
        GraphSummary {
            inputs: self.inputs.iter().map(sig).collect(),
            outputs: self.outputs.iter().map(sig).collect(),
            node_count: self.nodes.len(),
            op_histogram,
            initializer_count: self.initializers.len(),
            initializer_bytes: self.initializers.iter().map(|i| i.byte_len()).sum(),
        }
    }
}
