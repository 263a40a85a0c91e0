//! FD-FMNIST's feature network: a small Fashion-MNIST classifier flashctl trains itself
//! (`flashctl featurenet train`), pinned in fixtures/featurenet. Its 64-d penultimate
//! activations are the features of the Frechet distance, precision and recall. This is not
//! Inception FID; numbers are comparable only between runs using the same pinned weights.

use crate::checkpoint;
use crate::models::layers::{conv2d, linear};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use flashctl_graphs::{EagerOps, Ops};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FEATURE_DIM: usize = 64;
pub const WEIGHTS: &str = "featurenet.safetensors";
pub const INFO: &str = "featurenet.json";

/// What is known about a pinned feature network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureNetInfo {
    pub input_shape: [usize; 3],
    pub feature_dim: usize,
    pub iters: usize,
    pub batch: usize,
    pub seed: u64,
    pub test_accuracy: f64,
    pub command: String,
}

/// [B, 1, 28, 28] in [-1, 1] -> (features [B, 64], logits [B, 10]). Three stride-2 convs, a
/// global mean, one hidden layer.
pub fn forward<O: Ops>(o: &O, x: &O::T) -> flashctl_graphs::Result<(O::T, O::T)> {
    let h = o.silu(&conv2d(o, "conv1", x, 1, 16, 3, 2, 1)?)?; // 14x14
    let h = o.silu(&conv2d(o, "conv2", &h, 16, 32, 3, 2, 1)?)?; // 7x7
    let h = o.silu(&conv2d(o, "conv3", &h, 32, 64, 3, 2, 1)?)?; // 4x4
    let h = o.reshape(&h, &[0, 64, -1])?;
    let h = o.mean_keepdim(&h, 2)?;
    let h = o.reshape(&h, &[0, 64])?;
    let f = o.silu(&linear(o, "hidden", &h, 64, FEATURE_DIM)?)?;
    let logits = linear(o, "classifier", &f, FEATURE_DIM, 10)?;
    Ok((f, logits))
}

pub struct FeatureNet {
    ops: EagerOps,
    pub info: FeatureNetInfo,
}

/// The pinned network shipped in fixtures/featurenet (or `dir`).
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/featurenet")
}

impl FeatureNet {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// The network with its weights on `device`; [`FeatureNet::features`] copies each batch there.
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self> {
        let info_path = dir.join(INFO);
        let info: FeatureNetInfo =
            serde_json::from_str(&std::fs::read_to_string(&info_path).with_context(|| {
                format!(
                    "reading {} (run `flashctl featurenet train`)",
                    info_path.display()
                )
            })?)
            .with_context(|| format!("parsing {}", info_path.display()))?;
        let w = checkpoint::load_tensors(&dir.join(WEIGHTS), device)?;
        let ops = EagerOps::new(VarBuilder::from_tensors(w, DType::F32, device));
        Ok(Self { ops, info })
    }

    /// Features of images [N, 1, 28, 28], in batches.
    pub fn features(&self, x: &Tensor) -> Result<Vec<f32>> {
        if x.dims()[1..] != self.info.input_shape[..] {
            bail!(
                "FD-FMNIST needs images of shape {:?}, got {:?}",
                self.info.input_shape,
                &x.dims()[1..]
            );
        }
        let mut out = vec![];
        let n = x.dims()[0];
        for s in (0..n).step_by(256) {
            let xb = x
                .narrow(0, s, (n - s).min(256))?
                .to_device(self.ops.device())?;
            let (f, _) = forward(&self.ops, &xb)?;
            out.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Top-1 accuracy on images and labels.
    pub fn accuracy(&self, x: &Tensor, y: &[i64]) -> Result<f64> {
        let mut correct = 0;
        let n = x.dims()[0];
        for s in (0..n).step_by(500) {
            let m = (n - s).min(500);
            let (_, logits) = forward(&self.ops, &x.narrow(0, s, m)?)?;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += pred
                .iter()
                .zip(&y[s..s + m])
                .filter(|(p, t)| **p as i64 == **t)
                .count();
        }
        Ok(correct as f64 / n as f64)
    }
}

/// Images of a dataset as one tensor [N, C, H, W] (first `limit`).
pub fn images_tensor(ds: &crate::data::Dataset, limit: usize) -> Result<(Tensor, Vec<i64>)> {
    match ds {
        crate::data::Dataset::Images {
            shape,
            pixels,
            labels,
            ..
        } => {
            let per: usize = shape.iter().product();
            let n = (pixels.len() / per).min(limit);
            let x = Tensor::from_slice(
                &pixels[..n * per],
                (n, shape[0], shape[1], shape[2]),
                &Device::Cpu,
            )?;
            let y = labels.as_ref().map(|l| l[..n].to_vec()).unwrap_or_default();
            Ok((x, y))
        }
        _ => bail!("not an image dataset"),
    }
}

/// `flashctl featurenet train`: Adam on cross-entropy over the Fashion-MNIST training split,
/// then test accuracy on t10k; writes the weights and info into `out`.
pub fn train(
    data_dir: Option<&Path>,
    out: &Path,
    iters: usize,
    seed: u64,
) -> Result<FeatureNetInfo> {
    use candle_nn::Optimizer;
    use rand::{Rng, SeedableRng};
    let dir = crate::data::fashion_mnist_dir(data_dir);
    let train_set = crate::data::fashion_mnist_split(&dir, "train")?;
    let test_set = crate::data::fashion_mnist_split(&dir, "t10k")?;
    let (varmap, vb) = crate::seeded_vars::SeededVars::new(seed).into_var_builder(&Device::Cpu);
    let ops = EagerOps::new(vb);
    forward(
        &ops,
        &Tensor::zeros((1, 1, 28, 28), DType::F32, &Device::Cpu)?,
    )?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 2e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let batch = 128;
    let mut pb = crate::progress::Progress::new("iter", iters, true);
    for step in 0..iters {
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9));
        let (x, y) = train_set.batch(&mut rng, batch);
        // light augmentation: horizontal flips
        let x = Tensor::from_vec(x, (batch, 1, 28, 28), &Device::Cpu)?;
        let x = if rng.gen_bool(0.5) { x.flip(&[3])? } else { x };
        let y = Tensor::from_vec(y.expect("labelled"), batch, &Device::Cpu)?;
        let (_, logits) = forward(&ops, &x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        opt.backward_step(&loss)?;
        pb.inc("");
    }
    pb.finish();
    crate::fsx::create_dir_all(out)?;
    let weights: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    checkpoint::save_tensors(&out.join(WEIGHTS), &weights)?;
    let mut info = FeatureNetInfo {
        input_shape: [1, 28, 28],
        feature_dim: FEATURE_DIM,
        iters,
        batch,
        seed,
        test_accuracy: 0.0,
        command: format!("flashctl featurenet train --iters {iters} --seed {seed}"),
    };
    checkpoint::write_atomic(
        &out.join(INFO),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    let net = FeatureNet::load(out)?;
    let (xt, yt) = images_tensor(&test_set, usize::MAX)?;
    info.test_accuracy = net.accuracy(&xt, &yt)?;
    checkpoint::write_atomic(
        &out.join(INFO),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(info)
}
