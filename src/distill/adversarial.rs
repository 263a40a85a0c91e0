//! The adversarial term both methods can add (KDM's `--adversarial`, Imagine Flash's): a small
//! discriminator, never exported, trained on real vs generated samples in the same backward
//! pass as the generator without cross-gradients: the generator's non-saturating term goes
//! through a frozen (detached) copy of the discriminator's parameters, and the discriminator's
//! own loss sees the generated samples detached.

use anyhow::Result;
use candle_core::Tensor;
use flashctl_graphs::ops::Init;
use flashctl_graphs::{EagerOps, Ops};

const DISC: &str = "discriminator";

/// The discriminator, in candle directly (it is never exported): MLP 2 x 128 for points, two
/// stride-2 3x3 convs + mean pool + linear for images. `frozen` detaches its parameters.
pub fn discriminator(ops: &EagerOps, x: &Tensor, frozen: bool) -> Result<Tensor> {
    let p = |name: &str, shape: &[usize], fan_in: usize| -> Result<Tensor> {
        let b = 1.0 / (fan_in as f64).sqrt();
        let t = ops.param(
            &format!("{DISC}.{name}"),
            shape,
            Init::Uniform { lo: -b, up: b },
        )?;
        Ok(if frozen { t.detach() } else { t })
    };
    let silu = |t: &Tensor| -> Result<Tensor> { Ok(candle_nn::ops::silu(t)?) };
    let lin = |x: &Tensor, name: &str, i: usize, o: usize| -> Result<Tensor> {
        let w = p(&format!("{name}.weight"), &[o, i], i)?;
        let b = p(&format!("{name}.bias"), &[o], i)?;
        Ok(x.matmul(&w.t()?)?.broadcast_add(&b)?)
    };
    if x.rank() == 2 {
        let d = x.dims()[1];
        let h = silu(&lin(x, "l0", d, 128)?)?;
        let h = silu(&lin(&h, "l1", 128, 128)?)?;
        return lin(&h, "out", 128, 1);
    }
    let c = x.dims()[1];
    let conv = |x: &Tensor, name: &str, i: usize, o: usize| -> Result<Tensor> {
        let w = p(&format!("{name}.weight"), &[o, i, 3, 3], i * 9)?;
        let b = p(&format!("{name}.bias"), &[o], i * 9)?;
        Ok(ops.conv2d(x, &w, Some(&b), 2, 1)?)
    };
    let h = silu(&conv(x, "c0", c, 32)?)?;
    let h = silu(&conv(&h, "c1", 32, 64)?)?;
    let h = h.flatten_from(2)?.mean(2)?;
    lin(&h, "out", 64, 1)
}

/// log(1 + e^x), stable.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?)
}

/// Create the discriminator's parameters (training-only) for samples shaped like `x`.
pub fn declare(ops: &EagerOps, x: &Tensor) -> Result<()> {
    discriminator(ops, x, false)?;
    Ok(())
}

/// `weight` x softplus(-D_frozen(fake)) for the generator, plus the discriminator's
/// softplus(-D(real)) + softplus(D(sg(fake))).
pub fn terms(ops: &EagerOps, fake: &Tensor, real: &Tensor, weight: f64) -> Result<Tensor> {
    let g = softplus(&discriminator(ops, fake, true)?.neg()?)?.mean_all()?;
    let d_real = softplus(&discriminator(ops, real, false)?.neg()?)?.mean_all()?;
    let d_fake = softplus(&discriminator(ops, &fake.detach(), false)?)?.mean_all()?;
    Ok(((g * weight)? + (d_real + d_fake)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softplus_is_stable_and_exact() {
        let x = Tensor::new(&[-100f32, -1.0, 0.0, 1.0, 100.0], &Device::Cpu).unwrap();
        let y = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        let want = [
            0.0f32,
            0.313_261_7,
            std::f32::consts::LN_2,
            1.313_261_7,
            100.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn the_generator_term_moves_no_discriminator_weight_and_the_discriminator_no_generator() {
        let (varmap, vb) = crate::seeded_vars::SeededVars::new(2).into_var_builder(&Device::Cpu);
        let ops = EagerOps::new(vb);
        let g = candle_core::Var::new(&[[0.5f32, -0.3], [1.0, 0.2]], &Device::Cpu).unwrap();
        let real = Tensor::new(&[[1f32, 1.0], [-1.0, 0.5]], &Device::Cpu).unwrap();
        declare(&ops, &real).unwrap();
        // generator term alone: gradient on the generated sample, none on the discriminator
        let gen = softplus(
            &discriminator(&ops, g.as_tensor(), true)
                .unwrap()
                .neg()
                .unwrap(),
        )
        .unwrap()
        .mean_all()
        .unwrap();
        let grads = gen.backward().unwrap();
        assert!(grads.get(g.as_tensor()).is_some());
        for (name, v) in varmap.data().lock().unwrap().iter() {
            assert!(
                grads.get(v.as_tensor()).is_none(),
                "{name} moved by the generator term"
            );
        }
        // whole term with weight 0: only the discriminator learns
        let t = terms(&ops, g.as_tensor(), &real, 0.0).unwrap();
        let grads = t.backward().unwrap();
        let moved = varmap
            .data()
            .lock()
            .unwrap()
            .values()
            .any(|v| grads.get(v.as_tensor()).is_some());
        assert!(moved);
        let gg = grads
            .get(g.as_tensor())
            .map(|t| {
                t.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .unwrap_or(0.0);
        assert_eq!(
            gg, 0.0,
            "the discriminator's loss must not reach the generator"
        );
    }
}
