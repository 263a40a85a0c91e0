//! Deployment targets: which ONNX ops and opsets a receiving runtime accepts, checked before any
//! runtime runs (`flashctl validate --target T`).
//!
//! - `tensorrt10`: TensorRT 10's ONNX parser (onnx-tensorrt docs/operators.md: opsets 9-20). The
//!   op list is the parser's "supported: Y" rows carried since TensorRT 8.4, which TensorRT 10
//!   keeps; ops added later are left out (conservative: a false refusal, never a false pass).
//! - `ort-mobile`: ONNX Runtime's pre-built mobile package (reduced operator set, opsets 12-15,
//!   docs/reference/operators/mobile_package_op_type_support_1.15.md; the last reduced package
//!   was 1.18, later mobile packages carry every op).
//! - `generic`: any default-domain op at the exporter's opset.

use crate::pb;

#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub opset_min: i64,
    pub opset_max: i64,
    /// `None`: every default-domain op.
    pub ops: Option<&'static [&'static str]>,
    pub source: &'static str,
}

const TENSORRT10_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GRU",
    "HardSigmoid",
    "Identity",
    "If",
    "ImageScaler",
    "InstanceNormalization",
    "IsNaN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "LRN",
    "LSTM",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pad",
    "ParametricSoftplus",
    "Pow",
    "PRelu",
    "QuantizeLinear",
    "Range",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RNN",
    "Round",
    "ScaledTanh",
    "Scan",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

const ORT_MOBILE_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "DynamicQuantizeLinear",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "Identity",
    "If",
    "InstanceNormalization",
    "LRN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Range",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "Round",
    "Scan",
    "ScatterND",
    "Shape",
    "Sigmoid",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Unique",
    "Unsqueeze",
    "Where",
];

pub const TARGETS: &[Target] = &[
    Target {
        name: "generic",
        opset_min: 13,
        opset_max: i64::MAX,
        ops: None,
        source: "any ONNX runtime at opset >= 13",
    },
    Target {
        name: "tensorrt10",
        opset_min: 9,
        opset_max: 20,
        ops: Some(TENSORRT10_OPS),
        source: "onnx-tensorrt docs/operators.md (TensorRT 10: opsets 9-20)",
    },
    Target {
        name: "ort-mobile",
        opset_min: 12,
        opset_max: 15,
        ops: Some(ORT_MOBILE_OPS),
        source: "ONNX Runtime pre-built mobile package operator list (1.15, opsets 12-15)",
    },
];

pub fn target_by_name(name: &str) -> Result<&'static Target, String> {
    // the deployment targets of `flashctl build` name the same receivers: TensorRT through ORT's
    // provider is TensorRT 10's parser; tract and full ONNX Runtime builds take any op
    let name = match name {
        "ort-tensorrt" => "tensorrt10",
        "tract" | "ort-cpu" | "ort-cuda" => "generic",
        other => other,
    };
    TARGETS.iter().find(|t| t.name == name).ok_or_else(|| {
        format!(
            "unknown --target `{name}` (known: tract, ort-cpu, ort-cuda, ort-tensorrt, {})",
            TARGETS
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Every reason `m` is not deployable on `t` (empty: accepted).
pub fn check_target(m: &pb::ModelProto, t: &Target) -> Vec<String> {
    let mut problems = vec![];
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    if opset < t.opset_min || opset > t.opset_max {
        let max = if t.opset_max == i64::MAX {
            String::new()
        } else {
            t.opset_max.to_string()
        };
        problems.push(format!(
            "opset {opset} outside {}..{max} accepted by {}",
            t.opset_min, t.name
        ));
    }
    if let (Some(ops), Some(g)) = (t.ops, m.graph.as_ref()) {
        let mut seen = std::collections::BTreeSet::new();
        for n in &g.node {
            if !ops.contains(&n.op_type.as_str()) && seen.insert(n.op_type.clone()) {
                problems.push(format!(
                    "op {} (node `{}`) is not accepted by {}",
                    n.op_type, n.name, t.name
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(opset: i64, ops: &[&str]) -> pb::ModelProto {
        pb::ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(pb::GraphProto {
                node: ops
                    .iter()
                    .enumerate()
                    .map(|(i, op)| pb::NodeProto {
                        name: format!("n{i}"),
                        op_type: op.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn allow_lists_accept_and_refuse() {
        let trt = target_by_name("tensorrt10").unwrap();
        assert!(check_target(&model(17, &["Conv", "Gemm", "Softmax"]), trt).is_empty());
        let p = check_target(&model(17, &["Conv", "NonZero"]), trt);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("NonZero") && p[0].contains("n1"), "{p:?}");
        assert!(check_target(&model(21, &["Conv"]), trt)[0].contains("opset 21"));
        let mobile = target_by_name("ort-mobile").unwrap();
        assert!(check_target(&model(15, &["Conv", "Gemm"]), mobile).is_empty());
        assert!(check_target(&model(17, &["Conv"]), mobile)[0].contains("opset 17"));
        assert!(check_target(&model(15, &["Einsum"]), mobile)[0].contains("Einsum"));
        assert!(check_target(
            &model(17, &["Anything"]),
            target_by_name("generic").unwrap()
        )
        .is_empty());
        assert!(target_by_name("coreml").unwrap_err().contains("known"));
    }
}
