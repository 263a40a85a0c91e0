//! Structural checks run before any runtime sees a graph.

use crate::error::{ExportError, Result};
use crate::pb;
use std::collections::HashSet;

/// Ops that make a graph non-deterministic; exported samplers take noise as inputs instead.
const RANDOM_OPS: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Index of the first NaN/Inf of a float32/float16 initializer (raw or typed data).
fn first_non_finite(t: &pb::TensorProto) -> Option<usize> {
    use pb::tensor_proto::DataType;
    match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        Ok(DataType::Float) => t.float_data.iter().position(|v| !v.is_finite()),
        // fp16: exponent bits all ones is Inf or NaN
        Ok(DataType::Float16) if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(2)
            .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        _ => None,
    }
}

/// Opset >= 17, default-domain ops only, no random ops, no duplicated initializer names, every
/// graph input and output typed, every node input produced before use, every float initializer
/// finite.
pub fn check_structure(m: &pb::ModelProto) -> Result<()> {
    let bad = |s: String| Err(ExportError::Structure(s));
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    match opset {
        Some(v) if crate::onnx::OPSETS.contains(&v) => {}
        Some(v) => {
            return bad(format!(
                "default-domain opset {v} outside {}..={} (the opsets flashctl lowers to)",
                crate::onnx::OPSETS.start(),
                crate::onnx::OPSETS.end()
            ))
        }
        None => return bad("no default-domain opset import".into()),
    }
    let g = match &m.graph {
        Some(g) => g,
        None => return bad("model has no graph".into()),
    };
    let mut known: HashSet<&str> = HashSet::new();
    for i in &g.initializer {
        if !known.insert(i.name.as_str()) {
            return bad(format!("initializer `{}` is duplicated", i.name));
        }
        if let Some(k) = first_non_finite(i) {
            return bad(format!(
                "initializer `{}` holds NaN or Inf (element {k})",
                i.name
            ));
        }
    }
    for v in g.input.iter().chain(g.output.iter()) {
        let typed = matches!(
            &v.r#type,
            Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(t)),
                ..
            }) if t.elem_type != 0
        );
        if !typed {
            return bad(format!(
                "graph input/output `{}` has no tensor type",
                v.name
            ));
        }
    }
    for v in &g.input {
        known.insert(v.name.as_str());
    }
    for n in &g.node {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return bad(format!(
                "node `{}` uses non-default domain `{}`",
                n.name, n.domain
            ));
        }
        if RANDOM_OPS.contains(&n.op_type.as_str()) {
            return bad(format!("node `{}` is a random op ({})", n.name, n.op_type));
        }
        for i in &n.input {
            if !i.is_empty() && !known.contains(i.as_str()) {
                return bad(format!(
                    "node `{}` reads `{i}` before it is produced",
                    n.name
                ));
            }
        }
        for o in &n.output {
            known.insert(o.as_str());
        }
    }
    for o in &g.output {
        if !known.contains(o.name.as_str()) {
            return bad(format!("graph output `{}` is never produced", o.name));
        }
    }
    Ok(())
}
