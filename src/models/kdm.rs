//! KDM (Berman et al. 2025, "One-Step Offline Distillation of Diffusion-based Models via Koopman
//! Modeling"; code azencot-group/KDM): a one-step generator x0 = D(K E_T(x_T) [+ control(y)]).
//!
//! Encoders E_T, E_0 and decoder D are MLPs (2-D data) or small UNets run at timestep 0 (images;
//! the UNet's time embedding then reduces to a learned bias, its class embedding is the label
//! map). K is linear on the flattened latent: dense (`Linear(n, n)` with bias, as the reference)
//! or eigen-decomposed K = P L P^-1 with L block-diagonal 2x2 rotation-scalings of radius
//! exp(-exp(nu)) < 1 and angle exp(theta) (stable by construction; P^-1 is learned separately).
//! E_0 is used only in training (`encode_x0`); the generator a model directory runs, samples and
//! exports is `forward`.

use super::layers::{embedding, linear};
use super::unet::{self, UnetConfig};
use flashctl_graphs::ops::Init;
use flashctl_graphs::{GraphError, Ops, Prefixed, Result, UnaryOp};
use serde::{Deserialize, Serialize};

/// Parameter prefixes: everything under `encoder_0.` is training-only.
pub const ENCODER_T: &str = "encoder_t";
pub const ENCODER_0: &str = "encoder_0";
pub const DECODER: &str = "decoder";
pub const KOOPMAN: &str = "koopman";
pub const CONTROL: &str = "control";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KoopmanKind {
    Dense,
    Eigen,
}

impl std::str::FromStr for KoopmanKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dense" => Ok(Self::Dense),
            "eigen" => Ok(Self::Eigen),
            o => Err(format!("--koopman {o}: expected dense or eigen")),
        }
    }
}

/// One encoder or decoder network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KdmNet {
    /// Linear in -> `hidden`, `layers` residual SiLU layers, SiLU, linear -> out.
    Mlp { hidden: usize, layers: usize },
    /// A UNet (diffusers layout) run at timestep 0; its in/out channels map data <-> latent.
    Unet(Box<UnetConfig>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KdmConfig {
    /// One sample without batch: [d] or [C, H, W].
    pub sample_shape: Vec<usize>,
    /// One latent without batch: [n] (MLP) or [c, H, W] (UNet); K acts on it flattened.
    pub latent_shape: Vec<usize>,
    /// Architecture of E_T and of E_0.
    pub encoder: KdmNet,
    pub decoder: KdmNet,
    pub koopman: KoopmanKind,
    #[serde(default)]
    pub num_classes: Option<usize>,
}

impl KdmConfig {
    pub fn latent_dim(&self) -> usize {
        self.latent_shape.iter().product()
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.koopman == KoopmanKind::Eigen && !self.latent_dim().is_multiple_of(2) {
            return Err(format!(
                "eigen Koopman operator needs an even latent size, got {}",
                self.latent_dim()
            ));
        }
        for (name, net, from, to) in [
            (
                "encoder",
                &self.encoder,
                &self.sample_shape,
                &self.latent_shape,
            ),
            (
                "decoder",
                &self.decoder,
                &self.latent_shape,
                &self.sample_shape,
            ),
        ] {
            if let KdmNet::Unet(u) = net {
                let ok = from.len() == 3
                    && to.len() == 3
                    && u.in_channels == from[0]
                    && u.out_channels == to[0]
                    && u.sample_size == from[1]
                    && from[1..] == to[1..]
                    && u.num_class_embeds == self.num_classes;
                if !ok {
                    return Err(format!(
                        "{name} UNet does not map {from:?} to {to:?} with classes {:?}",
                        self.num_classes
                    ));
                }
            }
        }
        Ok(())
    }
}

fn invalid(msg: impl Into<String>) -> GraphError {
    GraphError::Invalid(msg.into())
}

/// Flatten [B, ...] to [B, n].
fn flat<O: Ops>(o: &O, x: &O::T) -> Result<O::T> {
    o.reshape(x, &[0, -1])
}

/// [B, n] back to [B, ...shape].
fn unflat<O: Ops>(o: &O, x: &O::T, shape: &[usize]) -> Result<O::T> {
    let mut spec = vec![0i64];
    spec.extend(shape.iter().map(|&d| d as i64));
    o.reshape(x, &spec)
}

/// Run one network (under its parameter prefix) from `from_shape` to `to_shape`.
#[allow(clippy::too_many_arguments)]
fn run_net<O: Ops>(
    o: &O,
    prefix: &str,
    net: &KdmNet,
    classes: Option<usize>,
    x: &O::T,
    to_shape: &[usize],
    labels: Option<&O::T>,
) -> Result<O::T> {
    Prefixed::run(o, prefix, |p| match net {
        KdmNet::Mlp { hidden, layers } => {
            let x = flat(p, x)?;
            let in_dim = p.shape(&x)[1]
                .known()
                .ok_or_else(|| invalid("KDM MLP input width unknown"))?;
            let out_dim: usize = to_shape.iter().product();
            let mut h = linear(p, "input", &x, in_dim, *hidden)?;
            if let (Some(k), Some(y)) = (classes, labels) {
                h = p.add(&h, &embedding(p, "class_embedding", y, k, *hidden)?)?;
            }
            for i in 0..*layers {
                let a = p.silu(&h)?;
                let a = linear(p, &format!("layers.{i}"), &a, *hidden, *hidden)?;
                h = p.add(&h, &a)?;
            }
            let y = linear(p, "output", &p.silu(&h)?, *hidden, out_dim)?;
            unflat(p, &y, to_shape)
        }
        KdmNet::Unet(u) => {
            let t = p.constant(&[0.0], &[1])?;
            unet::forward(u, p, x, &t, labels)
        }
    })
}

fn require_labels<'a, T>(c: &KdmConfig, labels: Option<&'a T>) -> Result<Option<&'a T>> {
    match (c.num_classes, labels) {
        (Some(_), None) => Err(invalid(
            "class_labels are required for a class-conditional KDM generator",
        )),
        (None, _) => Ok(None),
        (Some(_), l) => Ok(l),
    }
}

/// E_T(x_T) (or E_0(x_0) with `prefix` = [`ENCODER_0`]) flattened to [B, n].
pub fn encode<O: Ops>(
    c: &KdmConfig,
    o: &O,
    prefix: &str,
    x: &O::T,
    labels: Option<&O::T>,
) -> Result<O::T> {
    let labels = require_labels(c, labels)?;
    let z = run_net(
        o,
        prefix,
        &c.encoder,
        c.num_classes,
        x,
        &c.latent_shape,
        labels,
    )?;
    flat(o, &z)
}

/// D(z) for a flattened latent z [B, n] -> [B, ...sample shape].
pub fn decode<O: Ops>(c: &KdmConfig, o: &O, z: &O::T, labels: Option<&O::T>) -> Result<O::T> {
    let labels = require_labels(c, labels)?;
    let z = unflat(o, z, &c.latent_shape)?;
    run_net(
        o,
        DECODER,
        &c.decoder,
        c.num_classes,
        &z,
        &c.sample_shape,
        labels,
    )
}

/// K z (+ control(y) for class-conditional generators) on a flattened latent [B, n].
pub fn advance<O: Ops>(c: &KdmConfig, o: &O, z: &O::T, labels: Option<&O::T>) -> Result<O::T> {
    let labels = require_labels(c, labels)?;
    let n = c.latent_dim();
    let kz = Prefixed::run(o, KOOPMAN, |p| match c.koopman {
        KoopmanKind::Dense => p.scoped("dense", || {
            let w = p.param("weight", &[n, n], fan_in(n))?;
            let b = p.param("bias", &[n], fan_in(n))?;
            p.linear(z, &w, Some(&b))
        }),
        KoopmanKind::Eigen => {
            let m = n / 2;
            let p_inv = p.param("p_inv", &[n, n], Init::Const(0.0))?;
            let pm = p.param("p", &[n, n], Init::Const(0.0))?;
            let nu = p.param("nu", &[m], Init::Const(0.0))?;
            let theta = p.param("theta", &[m], Init::Const(-3.0))?;
            // u = P^-1 z as m complex pairs
            let u = p.scoped("p_inv", || p.linear(z, &p_inv, None))?;
            let u = p.reshape(&u, &[0, m as i64, 2])?;
            // L: radius exp(-exp(nu)) in (0, 1), angle exp(theta)
            let (c_, s_) = p.scoped("eigenvalues", || -> Result<_> {
                let r = p.unary(UnaryOp::Exp, &p.scale(&p.unary(UnaryOp::Exp, &nu)?, -1.0)?)?;
                let angle = p.unary(UnaryOp::Exp, &theta)?;
                let rc = p.mul(&r, &p.unary(UnaryOp::Cos, &angle)?)?;
                let rs = p.mul(&r, &p.unary(UnaryOp::Sin, &angle)?)?;
                Ok((p.reshape(&rc, &[-1, 1])?, p.reshape(&rs, &[-1, 1])?))
            })?;
            // (a, b) -> (rc a - rs b, rs a + rc b): u*rc + (u J)*rs with (a, b) J = (-b, a)
            let rotated = p.scoped("rotate", || -> Result<_> {
                let j = p.constant(&[0.0, 1.0, -1.0, 0.0], &[2, 2])?;
                let swapped = p.matmul(&u, &j)?;
                p.add(&p.mul(&u, &c_)?, &p.mul(&swapped, &s_)?)
            })?;
            let rotated = p.reshape(&rotated, &[0, n as i64])?;
            p.scoped("p", || p.linear(&rotated, &pm, None))
        }
    })?;
    match (c.num_classes, labels) {
        (Some(k), Some(y)) => {
            let u = embedding(o, CONTROL, y, k, n)?;
            o.add(&kz, &u)
        }
        _ => Ok(kz),
    }
}

fn fan_in(n: usize) -> Init {
    let b = 1.0 / (n as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// The one-step generator: x0 = D(K E_T(x_T) [+ control(y)]).
pub fn forward<O: Ops>(c: &KdmConfig, o: &O, x_t: &O::T, labels: Option<&O::T>) -> Result<O::T> {
    c.validate().map_err(GraphError::Invalid)?;
    let z = encode(c, o, ENCODER_T, x_t, labels)?;
    let z = advance(c, o, &z, labels)?;
    decode(c, o, &z, labels)
}

/// Initial values of the eigen operator (P = P^-1 = I; radii spread over [0.5, 0.99]; small
/// angles) — passed to the training loop as named initial tensors.
pub fn eigen_init(n: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let m = n / 2;
    let eye = identity(n);
    let radius = |i: usize| 0.5 + 0.49 * (i as f32 + 0.5) / m as f32;
    let nu: Vec<f32> = (0..m).map(|i| (-radius(i).ln()).ln()).collect();
    let theta: Vec<f32> = (0..m)
        .map(|i| (0.01 + 0.3 * (i as f32 + 0.5) / m as f32).ln())
        .collect();
    vec![
        (format!("{KOOPMAN}.p"), vec![n, n], eye.clone()),
        (format!("{KOOPMAN}.p_inv"), vec![n, n], eye),
        (format!("{KOOPMAN}.nu"), vec![m], nu),
        (format!("{KOOPMAN}.theta"), vec![m], theta),
    ]
}

/// The eigen operator's P^-1 P - I (its squared norm is the optional invertibility loss).
pub fn eigen_inverse_residual<O: Ops>(c: &KdmConfig, o: &O) -> Result<Option<O::T>> {
    if c.koopman != KoopmanKind::Eigen {
        return Ok(None);
    }
    let n = c.latent_dim();
    let p = o.param(&format!("{KOOPMAN}.p"), &[n, n], Init::Const(0.0))?;
    let p_inv = o.param(&format!("{KOOPMAN}.p_inv"), &[n, n], Init::Const(0.0))?;
    let prod = o.matmul(&p_inv, &p)?;
    Ok(Some(o.sub(&prod, &o.constant(&identity(n), &[n, n])?)?))
}

/// The n x n identity, row-major.
fn identity(n: usize) -> Vec<f32> {
    let mut eye = vec![0f32; n * n];
    for i in 0..n {
        eye[i * n + i] = 1.0;
    }
    eye
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use flashctl_graphs::EagerOps;
    use std::collections::HashMap;

    fn config(n: usize, koopman: KoopmanKind) -> KdmConfig {
        KdmConfig {
            sample_shape: vec![2],
            latent_shape: vec![n],
            encoder: KdmNet::Mlp {
                hidden: 4,
                layers: 1,
            },
            decoder: KdmNet::Mlp {
                hidden: 4,
                layers: 1,
            },
            koopman,
            num_classes: None,
        }
    }

    /// The eigen operator equals the explicit matrix P L P^-1 built entry by entry, and its
    /// eigenvalues lie strictly inside the unit circle.
    #[test]
    fn eigen_operator_is_p_l_p_inverse_with_stable_eigenvalues() {
        let n = 6;
        let m = n / 2;
        let dev = Device::Cpu;
        let p: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let p_inv: Vec<f32> = (0..n * n)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let nu = [-1.0f32, 0.3, 2.0];
        let theta = [-2.0f32, 0.1, 1.2];
        let mut w = HashMap::new();
        w.insert(
            "koopman.p".into(),
            Tensor::from_vec(p.clone(), (n, n), &dev).unwrap(),
        );
        w.insert(
            "koopman.p_inv".into(),
            Tensor::from_vec(p_inv.clone(), (n, n), &dev).unwrap(),
        );
        w.insert(
            "koopman.nu".into(),
            Tensor::from_vec(nu.to_vec(), m, &dev).unwrap(),
        );
        w.insert(
            "koopman.theta".into(),
            Tensor::from_vec(theta.to_vec(), m, &dev).unwrap(),
        );
        let ops = EagerOps::new(candle_nn::VarBuilder::from_tensors(w, DType::F32, &dev));
        let z: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let zt = Tensor::from_vec(z.clone(), (2, n), &dev).unwrap();
        let got = advance(&config(n, KoopmanKind::Eigen), &ops, &zt, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // explicit: L block diagonal [[r cos a, -r sin a], [r sin a, r cos a]]
        let mut l = vec![0f64; n * n];
        for k in 0..m {
            let r = (-(nu[k] as f64).exp()).exp();
            assert!(r > 0.0 && r < 1.0);
            let a = (theta[k] as f64).exp();
            let (i, j) = (2 * k, 2 * k + 1);
            l[i * n + i] = r * a.cos();
            l[i * n + j] = -r * a.sin();
            l[j * n + i] = r * a.sin();
            l[j * n + j] = r * a.cos();
        }
        let mat = |a: &[f64], b: &[f64]| -> Vec<f64> {
            let mut c = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    c[i * n + j] = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
                }
            }
            c
        };
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let k = mat(&mat(&to64(&p), &l), &to64(&p_inv));
        for b in 0..2 {
            for i in 0..n {
                let want: f64 = (0..n).map(|j| k[i * n + j] * z[b * n + j] as f64).sum();
                assert!(
                    (got[b][i] as f64 - want).abs() < 1e-5,
                    "row {b} col {i}: {} vs {want}",
                    got[b][i]
                );
            }
        }
    }

    #[test]
    fn eigen_init_is_identity_basis_with_radii_below_one() {
        let init = eigen_init(8);
        let nu = &init.iter().find(|e| e.0 == "koopman.nu").unwrap().2;
        for v in nu {
            let r = (-(*v as f64).exp()).exp();
            assert!((0.5..0.99).contains(&r), "{r}");
        }
        let p = &init.iter().find(|e| e.0 == "koopman.p").unwrap().2;
        assert_eq!(p.iter().sum::<f32>(), 8.0);
    }

    #[test]
    fn odd_latent_is_refused_for_eigen() {
        let mut c = config(5, KoopmanKind::Eigen);
        assert!(c.validate().unwrap_err().contains("even"));
        c.koopman = KoopmanKind::Dense;
        assert!(c.validate().is_ok());
    }
}
