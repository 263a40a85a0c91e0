//! `validate --bisect`: find the first node of a graph whose output leaves the eager path.
//!
//! The export's model is traced again and run eagerly, both through [`Recording`], which pairs
//! every traced value name with the eager tensor it stands for (the network is written once, so
//! both runs make the same primitive calls in the same order). The graph under test is rewritten
//! with every node output as a graph output, run in the failing runtime, and its nodes are walked
//! in order: the first whose output differs from the eager value beyond tolerance is named.

use crate::eager_runtime::ExportedModel;
use crate::validation::{make_runtime, BadInput};
use candle_core::{Device, Tensor};
use flashctl_exporters::{decode_model, encode_model, pb};
use flashctl_graphs::{Dim, EagerOps, Recording};
use flashctl_validate::{compare, HostTensor, ParityStats, Tolerance};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Divergence {
    /// ONNX node name, op type, position in the graph, and the output that diverged
    pub node: String,
    pub op_type: String,
    pub node_index: usize,
    pub output: String,
    /// absent when the output's shape differs (see the note)
    pub stats: Option<ParityStats>,
}

#[derive(Debug, Serialize)]
pub struct BisectReport {
    pub runtime: String,
    /// node outputs compared with their eager value before the first divergence (or all)
    pub compared: usize,
    /// node outputs with no eager counterpart (lowering helpers such as a transposed weight)
    pub without_eager_value: usize,
    pub first_divergence: Option<Divergence>,
    pub note: Option<String>,
}

/// Every eager intermediate by the traced value name it stands for.
pub fn eager_intermediates(
    exported: &ExportedModel,
    inputs: &[HostTensor],
) -> anyhow::Result<HashMap<String, Tensor>> {
    let net = exported.network().map_err(BadInput)?;
    let vb = exported.model.var_builder(&Device::Cpu);
    let (_, traced) = net.trace_recorded(vb.clone(), true)?;
    let xs = exported.input_tensors(inputs).map_err(BadInput)?;
    let refs: Vec<&Tensor> = xs.iter().collect();
    let eager = EagerOps::new(vb);
    let rec = Recording::new(&eager);
    net.run(&rec, &refs)?;
    let values = rec.into_taps();
    anyhow::ensure!(
        values.len() == traced.len(),
        "the traced and eager runs made {} and {} primitive calls",
        traced.len(),
        values.len()
    );
    let mut map = HashMap::new();
    for (t, v) in traced.into_iter().zip(values) {
        let fits = t.shape.len() == v.rank()
            && t.shape.iter().zip(v.dims()).all(|(d, &n)| match d {
                Dim::Known(k) => *k == n,
                Dim::Batch => true,
            });
        anyhow::ensure!(
            fits,
            "traced `{}` {:?} vs eager {:?}",
            t.name,
            t.shape,
            v.dims()
        );
        map.entry(t.name).or_insert(v);
    }
    Ok(map)
}

/// The graph with every node output also a graph output (typed where the graph says).
pub fn expose_intermediates(model: &pb::ModelProto) -> pb::ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().unwrap();
    let typed: HashMap<&str, &pb::ValueInfoProto> = model
        .graph
        .as_ref()
        .unwrap()
        .value_info
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut seen: std::collections::HashSet<String> =
        g.output.iter().map(|o| o.name.clone()).collect();
    let mut extra = vec![];
    for n in &g.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if seen.insert(o.clone()) {
                extra.push(typed.get(o.as_str()).map(|v| (*v).clone()).unwrap_or(
                    pb::ValueInfoProto {
                        name: o.clone(),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    g.output.extend(extra);
    m
}

pub fn bisect(
    graph: &Path,
    graph_bytes: &[u8],
    inputs: &[HostTensor],
    runtime: &str,
    tol: Tolerance,
) -> anyhow::Result<BisectReport> {
    let exported = ExportedModel::open(graph)
        .map_err(|e| BadInput(format!("--bisect needs the eager path: {e}")))?;
    let eager = eager_intermediates(&exported, inputs)?;
    let model = decode_model(graph_bytes).map_err(|e| BadInput(e.to_string()))?;
    let wide = encode_model(&expose_intermediates(&model));
    let mut report = BisectReport {
        runtime: runtime.into(),
        compared: 0,
        without_eager_value: 0,
        first_divergence: None,
        note: None,
    };
    let mut rt = make_runtime(runtime, graph)?;
    let got = match rt.prepare(&wide, inputs).and_then(|_| rt.run(inputs)) {
        Ok(v) => v,
        Err(e) => {
            report.note = Some(format!(
                "the graph with its intermediates exposed failed: {e}"
            ));
            return Ok(report);
        }
    };
    let got: HashMap<&str, &HostTensor> = got.iter().map(|t| (t.name.as_str(), t)).collect();
    let nodes = &model.graph.as_ref().unwrap().node;
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.output {
            let (Some(e), Some(a)) = (eager.get(o), got.get(o.as_str())) else {
                report.without_eager_value += 1;
                continue;
            };
            if e.dims() != a.shape.as_slice() {
                report.note = Some(format!(
                    "`{o}` is {:?} in the runtime and {:?} eagerly",
                    a.shape,
                    e.dims()
                ));
                report.first_divergence = Some(divergence(n, i, o, None));
                return Ok(report);
            }
            let ev: Vec<f64> = e
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1()?;
            // intermediates have their own scale: atol is relative to it when it exceeds 1
            let scale = ev.iter().fold(1f64, |m, v| m.max(v.abs()));
            let t = Tolerance {
                atol: tol.atol * scale,
                ..tol
            };
            let stats = compare(o, &a.values_f64(), &ev, t);
            if !stats.passed {
                report.first_divergence = Some(divergence(n, i, o, Some(stats)));
                return Ok(report);
            }
            report.compared += 1;
        }
    }
    report.note = Some(
        "no node output diverged beyond tolerance at its own scale: the output difference is \
         accumulated rounding, not one node"
            .into(),
    );
    Ok(report)
}

fn divergence(n: &pb::NodeProto, i: usize, output: &str, stats: Option<ParityStats>) -> Divergence {
    Divergence {
        node: n.name.clone(),
        op_type: n.op_type.clone(),
        node_index: i,
        output: output.into(),
        stats,
    }
}
