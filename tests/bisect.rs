//! `validate --bisect` on deliberately perturbed graphs names the perturbed node; the candle
//! eager runtime refuses a model changed since the export.

mod common;

use common::{fails, flashctl, ok, s};
use flashctl_exporters::{decode_model, encode_model, pb};
use std::path::{Path, PathBuf};

fn export_fixture(dir: &Path) -> PathBuf {
    let graph = dir.join("e/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&common::root().join("fixtures/models/mlp_teacher")),
        "--steps",
        "4",
        "--out",
        s(&graph),
    ]);
    graph
}

fn rewrite(graph: &Path, edit: impl FnOnce(&mut pb::GraphProto)) {
    let mut m = decode_model(&std::fs::read(graph).unwrap()).unwrap();
    edit(m.graph.as_mut().unwrap());
    std::fs::write(graph, encode_model(&m)).unwrap();
}

/// Run `validate --bisect --json`: exit 1, and each runtime's first diverging node.
fn bisect_nodes(graph: &Path) -> Vec<(String, String)> {
    let rts = common::parity_runtimes().join(",");
    let o = flashctl(&[
        "validate",
        s(graph),
        "--runtimes",
        &rts,
        "--bisect",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = r["bisect"].as_array().unwrap();
    assert_eq!(
        b.len(),
        common::parity_runtimes().len(),
        "every runtime bisected: {r:#}"
    );
    b.iter()
        .map(|x| {
            let d = &x["first_divergence"];
            (
                x["runtime"].as_str().unwrap().to_string(),
                d["node"].as_str().unwrap_or("<none>").to_string(),
            )
        })
        .collect()
}

#[test]
fn bisect_names_an_inserted_node_that_scales_an_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = export_fixture(tmp.path());
    // the second Gemm inside step 1's denoiser call gets its output scaled by 1.05
    rewrite(&graph, |g| {
        let i = g
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.starts_with("step1/denoiser/") && n.op_type == "Gemm")
            .nth(1)
            .unwrap()
            .0;
        let out = g.node[i].output[0].clone();
        g.node[i].output[0] = format!("{out}_before_perturbation");
        g.initializer.push(pb::TensorProto {
            name: "perturbation".into(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![1.05],
            ..Default::default()
        });
        g.node.insert(
            i + 1,
            pb::NodeProto {
                name: "perturbed/Mul".into(),
                op_type: "Mul".into(),
                input: vec![format!("{out}_before_perturbation"), "perturbation".into()],
                output: vec![out],
                ..Default::default()
            },
        );
    });
    for (rt, node) in bisect_nodes(&graph) {
        assert_eq!(node, "perturbed/Mul", "{rt}");
    }
    // the human report names it too
    let text = String::from_utf8_lossy(
        &flashctl(&["validate", s(&graph), "--runtimes", "tract", "--bisect"]).stdout,
    )
    .to_string();
    assert!(
        text.contains("first diverging node `perturbed/Mul`"),
        "{text}"
    );
}

#[test]
fn bisect_names_the_first_node_reading_a_corrupted_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = export_fixture(tmp.path());
    let mut expected = String::new();
    rewrite(&graph, |g| {
        // a weight of the second layer of the network; every step reads it, step 0 first
        let reader = g
            .node
            .iter()
            .filter(|n| n.op_type == "Gemm" && n.name.starts_with("step0/denoiser/"))
            .nth(2)
            .unwrap();
        let w = reader.input[1].clone();
        expected = g
            .node
            .iter()
            .find(|n| n.input.contains(&w))
            .unwrap()
            .name
            .clone();
        let t = g.initializer.iter_mut().find(|t| t.name == w).unwrap();
        let mut v: Vec<f32> = t
            .raw_data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        v[0] += 0.5;
        t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    });
    for (rt, node) in bisect_nodes(&graph) {
        assert_eq!(node, expected, "{rt}");
    }
}

#[test]
fn candle_runtime_refuses_a_model_changed_since_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let src = common::root().join("fixtures/models/mlp_teacher");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    let graph = tmp.path().join("e/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&model),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let out = ok(&["validate", s(&graph), "--runtimes", "candle", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["runtimes"][0]["status"], "pass", "{r:#}");
    assert_eq!(r["runtimes"][0]["parity"][0]["max_abs"], 0.0);
    // change one weight: the eager path no longer stands for this export
    let path = model.join("model.safetensors");
    let mut w = flashctl::checkpoint::load_tensors(&path, &candle_core::Device::Cpu).unwrap();
    let name = w.keys().next().unwrap().clone();
    let t = (w[&name].clone() + 1.0).unwrap();
    w.insert(name, t);
    flashctl::checkpoint::save_tensors(&path, &w).unwrap();
    let (code, err) = fails(&["validate", s(&graph), "--runtimes", "candle"]);
    assert_eq!(code, 2, "{err}");
    let text =
        String::from_utf8_lossy(&flashctl(&["validate", s(&graph), "--runtimes", "candle"]).stdout)
            .to_string();
    assert!(text.contains("weights changed since the export"), "{text}");
}
