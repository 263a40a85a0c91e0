//! KDM training on offline pairs (see `models::kdm` for the generator and docs/methods.md for
//! what follows the reference code and what differs).
//!
//! One iteration, pairs (x_T, x_0[, y]):
//!   z_T = E_T(x_T) + sigma n,  z_0 = E_0(x_0) + sigma n'          (latent noise, training only)
//!   z_push = K z_T [+ control(y)],  x_push = D(z_push),  x_rec = D(z_0)
//!   loss = |z_0 - z_push|^2 + rec(x_0, x_rec) + rec(x_0, x_push)
//!          [+ w_inv |P^-1 P - I|^2 (eigen)] [+ w_adv softplus(-Disc(x_push)) + disc loss]
//! No stop-gradient on z_0 (as the reference). With `--adversarial`, a small discriminator is
//! trained in the same step on the non-saturating loss; the generator's term sees it frozen, so
//! one optimiser step updates both without either gradient leaking into the other.

use super::adversarial;
use crate::checkpoint::{ModelConfig, SamplerDefaults, SCHEMA_VERSION};
use crate::models::kdm::{self, KdmConfig, KdmNet, KoopmanKind, ENCODER_0, ENCODER_T};
use crate::models::{Denoiser, UnetConfig};
use crate::pairs::PairSet;
use crate::sampler::SamplerKind;
use crate::train::{randn, Preset, TrainOptions, TrainReport};
use crate::train_loop::{train_loop, LoopSpec};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_graphs::EagerOps;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Reconstruction distance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Recon {
    /// mean squared error
    L2,
    /// per sample sqrt(mean((x - y)^2) + c^2) - c, averaged over the batch
    PseudoHuber { c: f64 },
}

impl std::str::FromStr for Recon {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "l2" => Ok(Recon::L2),
            None if s == "pseudo-huber" => Ok(Recon::PseudoHuber { c: 0.03 }),
            Some(("pseudo-huber", c)) => c
                .parse::<f64>()
                .ok()
                .filter(|c| *c > 0.0 && c.is_finite())
                .map(|c| Recon::PseudoHuber { c })
                .ok_or_else(|| format!("--recon {s}: c must be a positive number")),
            _ => Err(format!(
                "--recon {s}: expected l2, pseudo-huber or pseudo-huber:C"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KdmOptions {
    pub koopman: KoopmanKind,
    pub adversarial: bool,
    /// weight of the generator's adversarial term (reference: 0.01)
    pub adversarial_weight: f64,
    /// std of the Gaussian noise added to both latents in training (reference: 0.4)
    pub latent_noise: f64,
    pub recon: Recon,
    /// weight of |P^-1 P - I|^2 (mean over entries) for the eigen operator
    pub inverse_weight: f64,
}

impl Default for KdmOptions {
    fn default() -> Self {
        Self {
            koopman: KoopmanKind::Dense,
            adversarial: false,
            adversarial_weight: 0.01,
            latent_noise: 0.4,
            recon: Recon::L2,
            inverse_weight: 1.0,
        }
    }
}

/// Generator architecture for a sample shape: MLPs for points, small UNets for images
/// (latent: one channel at full resolution, as the reference).
pub fn architecture(
    shape: &[usize],
    classes: Option<usize>,
    preset: Preset,
    koopman: KoopmanKind,
) -> Result<KdmConfig> {
    if shape.len() == 1 {
        let (hidden, layers, latent) = match preset {
            Preset::Tiny => (32, 1, 8),
            Preset::Small => (256, 3, 32),
            Preset::Base => (512, 4, 64),
        };
        let net = KdmNet::Mlp { hidden, layers };
        return Ok(KdmConfig {
            sample_shape: shape.to_vec(),
            latent_shape: vec![latent],
            encoder: net.clone(),
            decoder: net,
            koopman,
            num_classes: classes,
        });
    }
    if shape.len() != 3 {
        bail!("KDM supports samples of shape [d] or [C, H, W], got {shape:?}");
    }
    let unet = |in_c: usize, out_c: usize| -> UnetConfig {
        let d = crate::train::preset_for_shape(&[in_c, shape[1], shape[2]], classes, preset).0;
        match d {
            Denoiser::Unet(mut u) => {
                u.out_channels = out_c;
                u
            }
            _ => unreachable!("image presets are UNets"),
        }
    };
    let c = KdmConfig {
        sample_shape: shape.to_vec(),
        latent_shape: vec![1, shape[1], shape[2]],
        encoder: KdmNet::Unet(Box::new(unet(shape[0], 1))),
        decoder: KdmNet::Unet(Box::new(unet(1, shape[0]))),
        koopman,
        num_classes: classes,
    };
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

/// Training defaults by sample shape: the Imagine Flash budgets (iterations x batch), with the
/// learning rate of training from scratch (KDM's networks do not start from the teacher).
pub fn default_train_options(sample_shape: &[usize]) -> TrainOptions {
    let mut o = super::default_train_options(sample_shape);
    o.lr = if sample_shape.len() == 1 { 1e-3 } else { 5e-4 };
    o
}

fn recon(kind: Recon, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let d2 = (a - b)?.sqr()?;
    Ok(match kind {
        Recon::L2 => d2.mean_all()?,
        Recon::PseudoHuber { c } => {
            let per = d2.flatten_from(1)?.mean(1)?;
            ((per + c * c)?.sqrt()? - c)?.mean_all()?
        }
    })
}

/// One iteration's draw.
pub struct KdmDraw {
    pub x_t: Tensor,
    pub x_0: Tensor,
    pub labels: Option<Tensor>,
    pub noise_t: Tensor,
    pub noise_0: Tensor,
}

/// The training loss (and its parts, for tests and logs).
pub fn loss(ops: &EagerOps, c: &KdmConfig, o: &KdmOptions, d: &KdmDraw) -> Result<Tensor> {
    let y = d.labels.as_ref();
    let sigma = o.latent_noise;
    let z_t = (kdm::encode(c, ops, ENCODER_T, &d.x_t, y)? + (&d.noise_t * sigma)?)?;
    let z_0 = (kdm::encode(c, ops, ENCODER_0, &d.x_0, y)? + (&d.noise_0 * sigma)?)?;
    let z_push = kdm::advance(c, ops, &z_t, y)?;
    let x_push = kdm::decode(c, ops, &z_push, y)?;
    let x_rec = kdm::decode(c, ops, &z_0, y)?;
    let mut total = (((&z_0 - &z_push)?.sqr()?.mean_all()? + recon(o.recon, &d.x_0, &x_rec)?)?
        + recon(o.recon, &d.x_0, &x_push)?)?;
    if let Some(r) = kdm::eigen_inverse_residual(c, ops)? {
        total = (total + (r.sqr()?.mean_all()? * o.inverse_weight)?)?;
    }
    if o.adversarial {
        total = (total + adversarial::terms(ops, &x_push, &d.x_0, o.adversarial_weight)?)?;
    }
    Ok(total)
}

/// Rows `idx` of a host tensor, copied to `device` (the pair set stays in host memory).
fn rows(t: &Tensor, idx: &[u32], device: &Device) -> Result<Tensor> {
    let i = Tensor::from_vec(idx.to_vec(), idx.len(), t.device())?;
    Ok(t.index_select(&i, 0)?.to_device(device)?)
}

/// Train a KDM generator on `pairs` into `out`.
#[allow(clippy::too_many_arguments)] // the run's what (data, model, options) and where (out, device)
pub fn distill(
    pairs: &PairSet,
    cfg: KdmConfig,
    o: KdmOptions,
    train: TrainOptions,
    out: &Path,
    resume: bool,
    progress: bool,
    device: &Device,
) -> Result<TrainReport> {
    if cfg.sample_shape != pairs.run.sample_shape || cfg.num_classes != pairs.run.num_classes {
        bail!(
            "generator shape {:?} / classes {:?} do not match the pairs' {:?} / {:?}",
            cfg.sample_shape,
            cfg.num_classes,
            pairs.run.sample_shape,
            pairs.run.num_classes
        );
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    let method = serde_json::json!({
        "method": "kdm",
        "options": o,
        "pairs": pairs.dir.display().to_string(),
        "pairs_count": pairs.len(),
        "teacher": pairs.run.teacher,
        "teacher_sha256": pairs.run.teacher_sha256,
        "teacher_steps": pairs.run.steps,
    });
    let config = ModelConfig {
        schema_version: SCHEMA_VERSION,
        role: "student".into(),
        dataset: pairs.run.dataset.clone(),
        denoiser: Denoiser::Kdm(Box::new(cfg.clone())),
        schedule: pairs.run.schedule.clone(),
        sampler: SamplerDefaults {
            kind: SamplerKind::OneStep,
            steps: 1,
            timesteps: None,
            noise_correction: false,
        },
        distillation: Some(method.clone()),
    };
    let init: Option<HashMap<String, Tensor>> = match cfg.koopman {
        KoopmanKind::Dense => None,
        KoopmanKind::Eigen => Some(
            kdm::eigen_init(cfg.latent_dim())
                .into_iter()
                .map(|(k, s, v)| Ok((k, Tensor::from_vec(v, s, &Device::Cpu)?)))
                .collect::<Result<_>>()?,
        ),
    };
    // training-only parameters: E_0 and the discriminator
    let declare_cfg = cfg.clone();
    let adversarial = o.adversarial;
    let train_only = Box::new(move |ops: &EagerOps| -> Result<()> {
        let mut shape = vec![1];
        shape.extend(&declare_cfg.sample_shape);
        let x = Tensor::zeros(shape, DType::F32, ops.device())?;
        let y = declare_cfg
            .num_classes
            .map(|_| Tensor::zeros(1, DType::I64, ops.device()))
            .transpose()?;
        kdm::encode(&declare_cfg, ops, ENCODER_0, &x, y.as_ref())?;
        if adversarial {
            adversarial::declare(ops, &x)?;
        }
        Ok(())
    });
    let (b, n, latent) = (train.batch, pairs.len(), cfg.latent_dim());
    let spec = LoopSpec {
        out,
        opts: train,
        config,
        init,
        method,
        resume,
        progress,
        train_only: Some(train_only),
        device: device.clone(),
    };
    train_loop(spec, |ops, rng, _step| {
        let idx: Vec<u32> = (0..b).map(|_| rng.gen_range(0..n) as u32).collect();
        let dev = ops.device();
        let draw = KdmDraw {
            x_t: rows(&pairs.x_t, &idx, dev)?,
            x_0: rows(&pairs.x_0, &idx, dev)?,
            labels: pairs
                .labels
                .as_ref()
                .map(|l| rows(l, &idx, dev))
                .transpose()?,
            noise_t: Tensor::from_vec(randn(rng, b * latent), (b, latent), dev)?,
            noise_0: Tensor::from_vec(randn(rng, b * latent), (b, latent), dev)?,
        };
        loss(ops, &cfg, &o, &draw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recon_parses() {
        assert_eq!("l2".parse::<Recon>().unwrap(), Recon::L2);
        assert_eq!(
            "pseudo-huber".parse::<Recon>().unwrap(),
            Recon::PseudoHuber { c: 0.03 }
        );
        assert_eq!(
            "pseudo-huber:0.1".parse::<Recon>().unwrap(),
            Recon::PseudoHuber { c: 0.1 }
        );
        assert!("pseudo-huber:-1".parse::<Recon>().is_err());
        assert!("l1".parse::<Recon>().is_err());
    }

    #[test]
    fn pseudo_huber_is_zero_at_equality_and_near_rms_far_away() {
        let a = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let r = recon(Recon::PseudoHuber { c: 0.03 }, &a, &a).unwrap();
        assert!(r.to_scalar::<f32>().unwrap().abs() < 1e-7);
        let b = (a.ones_like().unwrap() * 3.0).unwrap();
        let r = recon(Recon::PseudoHuber { c: 0.03 }, &a, &b)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((r - (9.0f32 + 0.0009).sqrt() + 0.03).abs() < 1e-5);
    }
}
