//! Guards the vendored candle-core patches (vendor/README.md):
//! - `Tensor::backward` stores the first gradient of a node instead of adding it into fresh
//!   zeros. Fan-in must still sum, the stored gradients must be contiguous (as the sums were),
//!   and values must be those of the zeros + gradient sum it replaces;
//! - the CPU sum over leading dimensions (followed by kept ones) adds runs as slices: the same
//!   bits as one element at a time in ascending order.
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

/// The sum of `x` ([d0, d1, d2, d3] row-major) over `reduced` dims, one element at a time in
/// ascending source order: what candle's general path computes.
fn reference_sum(x: &[f32], dims: [usize; 4], reduced: &[usize]) -> Vec<f32> {
    let out_dims: Vec<usize> = (0..4)
        .map(|d| if reduced.contains(&d) { 1 } else { dims[d] })
        .collect();
    let mut out = vec![0f32; out_dims.iter().product()];
    for (i, &v) in x.iter().enumerate() {
        let mut rest = i;
        let mut idx = [0usize; 4];
        for d in (0..4).rev() {
            idx[d] = rest % dims[d];
            rest /= dims[d];
        }
        let mut o = 0;
        for d in 0..4 {
            let id = if reduced.contains(&d) { 0 } else { idx[d] };
            o = o * out_dims[d] + id;
        }
        out[o] += v;
    }
    out
}

#[test]
fn sums_over_leading_dims_are_bit_exact() -> candle_core::Result<()> {
    let dims = [3usize, 5, 4, 16];
    let n: usize = dims.iter().product();
    // values of very different magnitudes, so a different summation order would show
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1009) as f32 - 500.0) * 10f32.powi((i % 7) as i32 - 3))
        .collect();
    let t = Tensor::from_slice(&x, &dims[..], &Device::Cpu)?;
    for reduced in [
        vec![0],
        vec![0, 1],
        vec![1],
        vec![0, 2],
        vec![1, 2],
        vec![0, 1, 2],
    ] {
        let got = t
            .sum_keepdim(reduced.clone())?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want = reference_sum(&x, dims, &reduced);
        assert_eq!(got, want, "sum over {reduced:?}");
    }
    Ok(())
}
