//! Guards the vendored candle-core patch (vendor/README.md): `Tensor::backward` now stores the
//! first gradient of a node instead of adding it into fresh zeros. Fan-in must still sum, the
//! stored gradients must be contiguous (as the sums were), and values must be those of the
//! zeros + gradient sum it replaces.
use candle_core::{Device, Tensor, Var};

#[test]
fn fan_in_gradients_still_sum() -> candle_core::Result<()> {
    let x = Var::from_slice(&[1.0f32, -2.0, 3.0], 3, &Device::Cpu)?;
    // y = x*x + x + x*3: dy/dx = 2x + 1 + 3, x reaches y along four edges
    let y = ((x.as_tensor() * x.as_tensor())? + x.as_tensor())?;
    let y = (y + x.as_tensor().affine(3.0, 0.0)?)?;
    let grads = y.sum_all()?.backward()?;
    let g = grads.get(x.as_tensor()).expect("gradient of x");
    assert_eq!(g.to_vec1::<f32>()?, vec![6.0, 0.0, 10.0]);
    Ok(())
}

#[test]
fn stored_gradients_are_contiguous_and_exact() -> candle_core::Result<()> {
    // a transposed and a broadcast gradient: before the patch zeros + g made them contiguous
    let w = Var::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu)?;
    let b = Var::from_slice(&[0.5f32, -0.5], (2, 1), &Device::Cpu)?;
    let c = Tensor::from_slice(
        &[1.0f32, 10.0, 100.0, 1000.0, 1e4, 1e5],
        (3, 2),
        &Device::Cpu,
    )?;
    let y = w.as_tensor().t()?.broadcast_mul(&c)?; // [3, 2]
    let z = y.t()?.broadcast_add(b.as_tensor())?; // [2, 3]
    let grads = z.sqr()?.sum_all()?.backward()?;
    let gw = grads.get(w.as_tensor()).expect("gradient of w");
    let gb = grads.get(b.as_tensor()).expect("gradient of b");
    assert!(gw.is_contiguous() && gb.is_contiguous());
    // reference: d/dw sum((w*c^T + b)^2) = 2 (w*c^T + b) * c^T; d/db = sum over columns
    let ct = c.t()?;
    let r = (w.as_tensor() * &ct)?.broadcast_add(b.as_tensor())?;
    let want_w = ((&r * 2.0)? * &ct)?;
    let want_b = (&r * 2.0)?.sum_keepdim(1)?;
    assert_eq!(gw.to_vec2::<f32>()?, want_w.to_vec2::<f32>()?);
    assert_eq!(gb.to_vec2::<f32>()?, want_b.to_vec2::<f32>()?);
    Ok(())
}
