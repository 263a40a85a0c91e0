//! Micro-benchmarks of the hot ops (`cargo bench --bench hot_ops`): the eager convolution
//! (per-sample im2col + GEMM, which training and reference sampling spend most time in; forward
//! alone and forward + backward against candle's own conv2d), group norm,
//! and a tract run of an exported 2-step sampler from the fixtures.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use flashctl_graphs::{EagerOps, Ops};
use std::collections::HashMap;

fn eager_ops(weights: HashMap<String, Tensor>) -> EagerOps {
    EagerOps::new(candle_nn::VarBuilder::from_tensors(
        weights,
        candle_core::DType::F32,
        &Device::Cpu,
    ))
}

fn conv_and_norm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let ops = eager_ops(HashMap::new());
    let x = Tensor::randn(0f32, 1., (8, 32, 32, 32), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.1, (32, 32, 3, 3), &dev).unwrap();
    let b = Tensor::zeros(32, candle_core::DType::F32, &dev).unwrap();
    c.bench_function("eager conv2d 3x3, 8x32x32x32", |bench| {
        bench.iter(|| ops.conv2d(&x, &w, Some(&b), 1, 1).unwrap())
    });
    // training: forward + backward, the fused CPU kernel against candle's own conv2d
    let wv = candle_core::Var::from_tensor(&w).unwrap();
    for (name, kernels) in [
        ("fused kernel", flashctl_graphs::Kernels::Fused),
        ("candle conv2d", flashctl_graphs::Kernels::Composite),
    ] {
        let o = EagerOps::with_kernels(
            candle_nn::VarBuilder::zeros(candle_core::DType::F32, &dev),
            kernels,
        );
        c.bench_function(
            &format!("eager conv2d 3x3 fwd+bwd, 8x32x32x32, {name}"),
            |bench| {
                bench.iter(|| {
                    let y = o.conv2d(&x, wv.as_tensor(), Some(&b), 1, 1).unwrap();
                    y.sum_all().unwrap().backward().unwrap()
                })
            },
        );
    }
    let g = Tensor::ones(32, candle_core::DType::F32, &dev).unwrap();
    c.bench_function("eager group_norm 8 groups, 8x32x32x32", |bench| {
        bench.iter(|| ops.group_norm(&x, 8, &g, &b, 1e-5).unwrap())
    });
}

fn tract_sampler(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("flashctl-bench-{}", std::process::id()));
    let graph = dir.join("model.onnx");
    flashctl::export::export(
        &root.join("fixtures/models/mlp_if2"),
        None,
        None,
        flashctl::export::Precision::Fp32,
        &graph,
    )
    .unwrap();
    let reference =
        flashctl::validation::load_reference(&dir.join("reference.safetensors")).unwrap();
    let inputs: Vec<_> = flashctl::validation::host_tensors(&reference)
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "noise")
        .collect();
    let mut rt = flashctl_validate::TractRuntime::new();
    use flashctl_validate::Runtime;
    rt.prepare(&std::fs::read(&graph).unwrap(), &inputs)
        .unwrap();
    c.bench_function("tract 2-step MLP sampler graph, batch 4", |bench| {
        bench.iter(|| rt.run(&inputs).unwrap())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, conv_and_norm, tract_sampler);
criterion_main!(benches);
