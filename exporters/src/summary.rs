//! A readable summary of an ONNX model: what a reviewer diffs when an export changes.

use crate::pb;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct OnnxSummary {
    pub opset: i64,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub node_count: usize,
    pub op_histogram: BTreeMap<String, usize>,
    pub initializer_count: usize,
    pub initializer_bytes: usize,
}

fn type_string(v: &pb::ValueInfoProto) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(t)),
        ..
    }) = &v.r#type
    else {
        return format!("{}: <untyped>", v.name);
    };
    let dtype = match pb::tensor_proto::DataType::try_from(t.elem_type) {
        Ok(pb::tensor_proto::DataType::Float) => "float32".to_string(),
        Ok(pb::tensor_proto::DataType::Float16) => "float16".to_string(),
        Ok(pb::tensor_proto::DataType::Int64) => "int64".to_string(),
        Ok(other) => format!("{other:?}").to_lowercase(),
        Err(_) => format!("type{}", t.elem_type),
    };
    let dims: Vec<String> = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Value::DimValue(n)) => n.to_string(),
                    Some(Value::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{}: {} [{}]", v.name, dtype, dims.join(","))
}

/// A tensor value's element type (`pb::tensor_proto::DataType` as i32) and dimensions, `None`
/// where a dimension is symbolic or unknown; `None` for a value that is not a typed tensor.
pub fn tensor_signature(v: &pb::ValueInfoProto) -> Option<(i32, Vec<Option<usize>>)> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(n)) if n > 0 => Some(n as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((t.elem_type, dims))
}

/// Bytes an initializer occupies, whichever storage field holds its data.
pub fn initializer_bytes(t: &pb::TensorProto) -> usize {
    if !t.raw_data.is_empty() {
        return t.raw_data.len();
    }
    t.float_data.len() * 4
        + t.int64_data.len() * 8
        + t.int32_data.len() * 4
        + t.double_data.len() * 8
}

pub fn summarize(m: &pb::ModelProto) -> OnnxSummary {
    let g = m.graph.clone().unwrap_or_default();
    let mut op_histogram = BTreeMap::new();
    for n in &g.node {
        *op_histogram.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let opsets: HashMap<&str, i64> = m
        .opset_import
        .iter()
        .map(|o| (o.domain.as_str(), o.version))
        .collect();
    OnnxSummary {
        opset: opsets
            .get("")
            .or(opsets.get("ai.onnx"))
            .copied()
            .unwrap_or(0),
        inputs: g.input.iter().map(type_string).collect(),
        outputs: g.output.iter().map(type_string).collect(),
        node_count: g.node.len(),
        op_histogram,
        initializer_count: g.initializer.len(),
        initializer_bytes: g.initializer.iter().map(initializer_bytes).sum(),
    }
}
