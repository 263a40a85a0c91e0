//! Lowering of the graph IR to an ONNX ModelProto (opset 13-21, 17 by default; default domain
//! only).

use crate::error::{ExportError, Result};
use flashctl_graphs::{DType, Dim, Graph, Initializer, Op, TensorData, ValueInfo};
use prost::Message;
use std::path::Path;
use tract_onnx::pb;

/// Opset 17: first opset with LayerNormalization, last where ReduceMean takes `axes` as an
/// attribute; TensorRT 10, ORT (mobile too) and tract all accept it.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 is the one that goes with opset 17.
pub const IR_VERSION: i64 = 8;
/// The opsets the IR lowers to: every op flashctl emits exists with the same meaning from 13
/// (Softmax over one axis, Clip/Pad/Resize with tensor inputs); from 18 ReduceMean takes its
/// axes as an input instead of an attribute.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// The IR version that goes with a default-domain opset (onnx/helper.py VERSION_TABLE).
pub fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// Key/value metadata stored in the model (`metadata_props`).
#[derive(Debug, Clone, Default)]
pub struct ExportMeta {
    pub doc: String,
    pub props: Vec<(String, String)>,
    /// default-domain opset (None: [`OPSET`]); must lie in [`OPSETS`]
    pub opset: Option<i64>,
}

fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => pb::tensor_proto::DataType::Float as i32,
        DType::F16 => pb::tensor_proto::DataType::Float16 as i32,
        DType::I64 => pb::tensor_proto::DataType::Int64 as i32,
    }
}

fn value_info(v: &ValueInfo) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = v
        .shape
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Batch => Value::DimParam("batch".into()),
                Dim::Known(n) => Value::DimValue(*n as i64),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem_type(v.dtype),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

fn tensor(init: &Initializer) -> pb::TensorProto {
    // raw_data (little-endian) keeps large initializers compact and fast to parse.
    let raw_data = match &init.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    pb::TensorProto {
        dims: init.dims.iter().map(|&d| d as i64).collect(),
        data_type: elem_type(init.dtype()),
        name: init.name.clone(),
        raw_data,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

fn attributes(op: &Op, opset: i64) -> Vec<pb::AttributeProto> {
    match op {
        Op::Conv { strides, pads } => vec![
            attr_ints("strides", &strides.map(|s| s as i64)),
            attr_ints("pads", &pads.map(|s| s as i64)),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", 1),
        ],
        Op::Gemm { trans_b } => vec![attr_int("transB", *trans_b as i64)],
        Op::Softmax { axis } => vec![attr_int("axis", *axis)],
        Op::ReduceMean { axes, keepdims } => {
            if opset >= 18 {
                vec![attr_int("keepdims", *keepdims as i64)]
            } else {
                vec![
                    attr_ints("axes", axes),
                    attr_int("keepdims", *keepdims as i64),
                ]
            }
        }
        Op::Transpose { perm } => {
            vec![attr_ints(
                "perm",
                &perm.iter().map(|&p| p as i64).collect::<Vec<_>>(),
            )]
        }
        Op::Concat { axis } | Op::Gather { axis } => vec![attr_int("axis", *axis)],
        Op::Cast { to } => vec![attr_int("to", elem_type(*to) as i64)],
        Op::InstanceNormalization { epsilon } => vec![attr_float("epsilon", *epsilon)],
        Op::ResizeNearest => vec![
            attr_string("mode", "nearest"),
            attr_string("coordinate_transformation_mode", "asymmetric"),
            attr_string("nearest_mode", "floor"),
        ],
        _ => vec![],
    }
}

/// Lower a traced graph to a complete ONNX model.
pub fn to_model_proto(g: &Graph, meta: &ExportMeta) -> pb::ModelProto {
    let opset = meta.opset.unwrap_or(OPSET);
    let mut extra: Vec<Initializer> = vec![];
    let node = g
        .nodes
        .iter()
        .map(|n| {
            let mut input = n.inputs.clone();
            // opset 18+: ReduceMean's axes are a second (int64 initializer) input
            if let (Op::ReduceMean { axes, .. }, true) = (&n.op, opset >= 18) {
                let name = format!(
                    "opset18/axes_{}",
                    axes.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join("_")
                );
                if !extra.iter().any(|i| i.name == name) {
                    extra.push(Initializer {
                        name: name.clone(),
                        dims: vec![axes.len()],
                        data: TensorData::I64(axes.clone()),
                    });
                }
                input.push(name);
            }
            pb::NodeProto {
                input,
                output: n.outputs.clone(),
                name: n.name.clone(),
                op_type: n.op.onnx_name().into(),
                domain: String::new(),
                attribute: attributes(&n.op, opset),
                doc_string: String::new(),
            }
        })
        .collect();
    let graph = pb::GraphProto {
        node,
        name: g.name.clone(),
        initializer: g.initializers.iter().chain(&extra).map(tensor).collect(),
        input: g.inputs.iter().map(value_info).collect(),
        output: g.outputs.iter().map(value_info).collect(),
        value_info: g.value_info.iter().map(value_info).collect(),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: ir_version_for(opset),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "flashctl".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: meta.doc.clone(),
        graph: Some(graph),
        metadata_props: meta
            .props
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn encode_model(m: &pb::ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// Parse ONNX bytes; a truncated or corrupt file is an error, never a panic.
pub fn decode_model(bytes: &[u8]) -> Result<pb::ModelProto> {
    if bytes.is_empty() {
        return Err(ExportError::Malformed("empty file".into()));
    }
    let m = pb::ModelProto::decode(bytes).map_err(|e| ExportError::Malformed(e.to_string()))?;
    if m.graph.is_none() {
        return Err(ExportError::Malformed("no graph in model".into()));
    }
    Ok(m)
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e| ExportError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
