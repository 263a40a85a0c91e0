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

/// Opset >= 17, default-domain ops only, no random ops, no duplicated initializer names, every
/// graph input and output typed, every node input produced before use.
pub fn check_structure(m: &pb::ModelProto) -> Result<()> {
    let bad = |s: String| Err(ExportError::Structure(s));
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    match opset {
        Some(v) if v >= 17 => {}
        Some(v) => return bad(format!("default-domain opset {v} < 17")),
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
