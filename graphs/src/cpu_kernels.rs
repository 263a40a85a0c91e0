//! Fused CPU kernels for the eager (training) path, as candle custom ops with their own backward.
//!
//! Each replaces a composite of candle ops whose cost on the CPU was measured
//! (docs/performance.md): candle's elementwise ops are single-threaded and allocate one tensor
//! per op, so a group norm (~10 ops forward, ~25 backward) or a softmax cost many passes over
//! memory, and the im2col convolution built from `narrow` + `cat` paid k*k copies forward and
//! k*k zero-padded copies backward. The kernels compute the same function as the composites
//! (gradient-checked against them in the tests below); the traced graph never sees them: they
//! are chosen by [`crate::EagerOps`] on the CPU only, and the trace backend keeps the composite.
//!
//! Every kernel is deterministic: work is split over independent (batch, channel) or row chunks,
//! each reduced in a fixed order, so a resumed run stays bit-exact whatever the thread count.

use crate::simd::multiversion;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The contiguous f32 data of a custom op argument.
fn f32_data<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("{op}: f32 only"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: needs a contiguous input"),
    }
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The three gradients a backward kernel packed into one vector, in the order and shapes of its
/// three arguments.
fn unpack3(packed: &Tensor, args: [&Tensor; 3]) -> Result<Grads3> {
    let mut at = 0;
    let mut out = vec![];
    for a in args {
        let n = a.elem_count();
        out.push(Some(packed.narrow(0, at, n)?.reshape(a.shape())?));
        at += n;
    }
    let [a, b, c]: [Option<Tensor>; 3] = out.try_into().expect("three gradients");
    Ok((a, b, c))
}

// ---- im2col / col2im ------------------------------------------------------------------------

/// A square-kernel convolution's geometry: input [b, c, h, w] -> patches [b, c*k*k, ho*wo].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad - self.k) / self.stride + 1,
            (self.w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }
    /// Output columns `ox` whose input column `ox*stride + kj - pad` lies inside [0, w).
    fn valid_cols(&self, kj: usize, wo: usize) -> (usize, usize) {
        valid_range(kj, self.pad, self.stride, self.w, wo)
    }
    fn valid_rows(&self, ki: usize, ho: usize) -> (usize, usize) {
        valid_range(ki, self.pad, self.stride, self.h, ho)
    }
}

/// The outputs `o` in [0, n_out) with `o*stride + k - pad` in [0, n_in), as a half-open range.
fn valid_range(k: usize, pad: usize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    let lo = if k >= pad {
        0
    } else {
        (pad - k).div_ceil(stride)
    };
    // o*stride + k - pad <= n_in - 1  <=>  o <= (n_in - 1 + pad - k) / stride
    let hi = if n_in + pad > k {
        ((n_in - 1 + pad - k) / stride + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Patches of one [c, h, w] sample as [c*k*k, ho*wo], row `ci*k*k + ki*k + kj`: the layout of a
/// [o, c, k, k] weight reshaped to [o, c*k*k], so the convolution is one matrix product. Every
/// element of `dst` is written (padding positions with zeros), so it may hold stale scratch.
fn im2col_sample(g: &ConvGeometry, src: &[f32], dst: &mut [f32]) {
    let (ho, wo) = g.out_hw();
    let (kk, hw_out) = (g.k * g.k, ho * wo);
    for ci in 0..g.c {
        let plane = &src[ci * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            let (y0, y1) = g.valid_rows(ki, ho);
            for kj in 0..g.k {
                let (x0, x1) = g.valid_cols(kj, wo);
                let row = &mut dst[(ci * kk + ki * g.k + kj) * hw_out..][..hw_out];
                row[..y0 * wo].fill(0.0);
                row[y1 * wo..].fill(0.0);
                for oy in y0..y1 {
                    let iy = oy * g.stride + ki - g.pad;
                    let s = &plane[iy * g.w..][..g.w];
                    let d = &mut row[oy * wo..][..wo];
                    d[..x0].fill(0.0);
                    d[x1..].fill(0.0);
                    if g.stride == 1 {
                        let ix0 = x0 + kj - g.pad;
                        d[x0..x1].copy_from_slice(&s[ix0..ix0 + (x1 - x0)]);
                    } else {
                        for ox in x0..x1 {
                            d[ox] = s[ox * g.stride + kj - g.pad];
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread scratch for patch matrices, reused across calls: a fresh zero-filled buffer
    /// per sample cost a memset (and page faults) of the whole patch matrix each time.
    static PATCHES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PATCHES_2: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` on the patch matrix of sample `x` (the sample itself for a pointwise convolution,
/// else its im2col in this thread's patch scratch).
fn with_patches<R>(g: &ConvGeometry, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    if g.is_pointwise() {
        return f(x);
    }
    with_scratch(&PATCHES, g.patch_len(), |cols| {
        im2col_sample(g, x, cols);
        f(cols)
    })
}

/// Run `f` with a scratch slice of `len` floats (contents unspecified) from `key`'s per-thread
/// buffer, or a fresh one if that buffer is in use further up this thread's stack.
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// The adjoint of [`im2col_sample`]: patches [c*k*k, ho*wo] summed back into [c, h, w].
fn col2im_sample(g: &ConvGeometry, src: &[f32], dst: &mut [f32]) {
    let (ho, wo) = g.out_hw();
    let (kk, hw_out) = (g.k * g.k, ho * wo);
    dst.fill(0.0);
    for ci in 0..g.c {
        let plane = &mut dst[ci * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.k {
            let (y0, y1) = g.valid_rows(ki, ho);
            for kj in 0..g.k {
                let (x0, x1) = g.valid_cols(kj, wo);
                let row = &src[(ci * kk + ki * g.k + kj) * hw_out..][..hw_out];
                for oy in y0..y1 {
                    let iy = oy * g.stride + ki - g.pad;
                    let d = &mut plane[iy * g.w..][..g.w];
                    let s = &row[oy * wo..][..wo];
                    if g.stride == 1 {
                        let ix0 = x0 + kj - g.pad;
                        for (dv, &sv) in d[ix0..ix0 + (x1 - x0)].iter_mut().zip(&s[x0..x1]) {
                            *dv += sv;
                        }
                    } else {
                        for ox in x0..x1 {
                            d[ox * g.stride + kj - g.pad] += s[ox];
                        }
                    }
                }
            }
        }
    }
}

/// A row-major or transposed view of a matrix in a slice: element (r, c) at
/// `r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major [r, cols] matrix.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// dst [m, n] (row-major) = lhs [m, k] @ rhs [k, n], with gemm's own threads when `threads > 1`.
fn matmul_into(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef,
    rhs: MatRef,
    threads: usize,
) {
    matmul_into_strided(dst, false, m, n, k, lhs, rhs, threads)
}

/// As [`matmul_into`], writing the [m, n] product transposed (column-major) when `dst_t`.
#[allow(clippy::too_many_arguments)]
fn matmul_into_strided(
    dst: &mut [f32],
    dst_t: bool,
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef,
    rhs: MatRef,
    threads: usize,
) {
    assert!(dst.len() >= m * n, "matmul destination too small");
    lhs.check(m, k);
    rhs.check(k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    let (dst_rs, dst_cs) = if dst_t {
        (1, m as isize)
    } else {
        (n as isize, 1)
    };
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three views were bounds-checked above for [m, k], [k, n] and [m, n] (in either
    // order of dst); dst is borrowed mutably and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Threads for gemm inside one sample: all of them when there are fewer samples than threads
/// (samples then run one after another), else one (samples run in parallel).
fn threads_per_sample(batch: usize) -> (bool, usize) {
    let threads = rayon::current_num_threads();
    if batch >= threads {
        (true, 1)
    } else {
        (false, threads)
    }
}

/// Run `f(i, out_chunk)` for every sample, in parallel or in order as [`threads_per_sample`] says.
fn for_each_sample<F>(out: &mut [f32], chunk: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Send + Sync,
{
    if chunk == 0 {
        return;
    }
    if parallel {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, d)| f(i, d));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, d)| f(i, d));
    }
}

/// The weight of the convolution whose output is a stride-1 convolution's input gradient:
/// [o, c, k, k] -> [c, o, k, k] with each kernel rotated by 180 degrees, as [c, o*k*k].
fn flipped_transposed_weight(w: &[f32], o: usize, c: usize, k: usize) -> Vec<f32> {
    let kk = k * k;
    let mut out = vec![0f32; c * o * kk];
    for oi in 0..o {
        for ci in 0..c {
            let src = &w[(oi * c + ci) * kk..][..kk];
            let dst = &mut out[(ci * o + oi) * kk..][..kk];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    out
}

/// 2-D convolution with a square kernel and bias: args (x [b, c, h, w], weight [o, c, k, k],
/// bias [o]). Per sample: im2col into a scratch buffer and one matrix product, so no batch-sized
/// patch tensor is ever held, and the backward recomputes the patches instead of keeping them.
#[derive(Debug, Clone, Copy)]
pub struct Conv2d {
    pub stride: usize,
    pub pad: usize,
}

/// The backward of [`Conv2d`]: args (x, weight, grad of the output) -> [dx, dweight, dbias]
/// packed in one vector.
struct Conv2dBackward(Conv2d);

impl Conv2d {
    fn geometry(&self, x: &Shape, w: &Shape) -> Result<(ConvGeometry, usize)> {
        let (b, c, h, wd) = x.dims4()?;
        let (o, ci, k, k2) = w.dims4()?;
        if ci != c || k != k2 || self.stride == 0 || h + 2 * self.pad < k || wd + 2 * self.pad < k {
            bail!(
                "conv2d: input {:?}, weight {:?}, stride {}, padding {}",
                x.dims(),
                w.dims(),
                self.stride,
                self.pad
            );
        }
        Ok((
            ConvGeometry {
                b,
                c,
                h,
                w: wd,
                k,
                stride: self.stride,
                pad: self.pad,
            },
            o,
        ))
    }
}

impl ConvGeometry {
    /// 1x1, stride 1, no padding: the patches are the input itself.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    fn patch_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.c * self.k * self.k * ho * wo
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "flashctl-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o) = self.geometry(xl.shape(), wl.shape())?;
        let (x, w, bias) = (
            f32_data(xs, xl, "conv2d")?,
            f32_data(ws, wl, "conv2d")?,
            f32_data(bs, bl, "conv2d")?,
        );
        if bias.len() != o {
            bail!("conv2d: bias of {} for {o} output channels", bias.len());
        }
        let (ho, wo) = g.out_hw();
        let (ckk, hw_out) = (g.c * g.k * g.k, ho * wo);
        let mut out = vec![0f32; g.b * o * hw_out];
        let (parallel, threads) = threads_per_sample(g.b);
        for_each_sample(&mut out, o * hw_out, parallel, |i, y| {
            let xi = &x[i * g.c * g.h * g.w..][..g.c * g.h * g.w];
            with_patches(&g, xi, |cols| {
                matmul_into(
                    y,
                    o,
                    hw_out,
                    ckk,
                    MatRef::rows(w, ckk),
                    MatRef::rows(cols, hw_out),
                    threads,
                )
            });
            for (row, &b) in y.chunks_mut(hw_out).zip(bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.b, o, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &grad.contiguous()?,
            &Conv2dBackward(*self),
        )?;
        unpack3(&packed, [x, w, b])
    }
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "flashctl-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o) = self.0.geometry(xl.shape(), wl.shape())?;
        let (x, w, dy) = (
            f32_data(xs, xl, "conv2d backward")?,
            f32_data(ws, wl, "conv2d backward")?,
            f32_data(gs, gl, "conv2d backward")?,
        );
        let (ho, wo) = g.out_hw();
        let (ckk, hw_out, chw) = (g.c * g.k * g.k, ho * wo, g.c * g.h * g.w);
        if dy.len() != g.b * o * hw_out {
            bail!("conv2d backward: gradient of {} values", dy.len());
        }
        // per sample: its dx, and its dweight / dbias (summed over samples in order below, so
        // the result does not depend on the thread count)
        let mut out = vec![0f32; g.b * chw + o * ckk + o];
        let (dx_all, dwb) = out.split_at_mut(g.b * chw);
        let mut parts = vec![0f32; g.b * (o * ckk + o)];
        let (parallel, threads) = threads_per_sample(g.b);
        // dx of a stride-1 convolution is itself a convolution: of dy, padded by k-1-pad, with
        // the weight flipped in space and transposed in channels. Its patches of dy and one
        // GEMM with inner size o*k*k replace the GEMM with inner size o into a patch-sized
        // buffer and the col2im scatter back onto the input.
        let transposed_conv = (!g.is_pointwise() && g.stride == 1 && g.pad < g.k).then(|| {
            let gt = ConvGeometry {
                b: g.b,
                c: o,
                h: ho,
                w: wo,
                k: g.k,
                stride: 1,
                pad: g.k - 1 - g.pad,
            };
            debug_assert_eq!(gt.out_hw(), (g.h, g.w));
            (gt, flipped_transposed_weight(w, o, g.c, g.k))
        });
        let sample = |i: usize, dx: &mut [f32], part: &mut [f32]| {
            let (dw, db) = part.split_at_mut(o * ckk);
            let xi = &x[i * chw..][..chw];
            let dyi = &dy[i * o * hw_out..][..o * hw_out];
            let dyi_rows = MatRef::rows(dyi, hw_out);
            // dweight_i = dy_i [o, hw] @ cols_i^T [hw, ckk], computed as its transpose
            // cols_i [ckk, hw] @ dy_i^T [hw, o] written column-major: gemm then packs the small
            // dy_i^T instead of the patch matrix read across its rows
            with_patches(&g, xi, |cols| {
                matmul_into_strided(
                    dw,
                    true,
                    ckk,
                    o,
                    hw_out,
                    MatRef::rows(cols, hw_out),
                    MatRef::transposed(dyi, hw_out),
                    threads,
                )
            });
            for (d, row) in db.iter_mut().zip(dyi.chunks(hw_out)) {
                *d = row.iter().sum();
            }
            let wt = MatRef::transposed(w, ckk);
            if g.is_pointwise() {
                matmul_into(dx, ckk, hw_out, o, wt, dyi_rows, threads);
            } else if let Some((gt, w_flip)) = &transposed_conv {
                let okk = o * g.k * g.k;
                with_scratch(&PATCHES_2, gt.patch_len(), |dy_cols| {
                    im2col_sample(gt, dyi, dy_cols);
                    let rows = MatRef::rows(w_flip, okk);
                    matmul_into(
                        dx,
                        g.c,
                        g.h * g.w,
                        okk,
                        rows,
                        MatRef::rows(dy_cols, g.h * g.w),
                        threads,
                    );
                });
            } else {
                // dcols_i = weight^T [ckk, o] @ dy_i [o, hw], then back onto the input grid
                with_scratch(&PATCHES_2, g.patch_len(), |dcols| {
                    matmul_into(dcols, ckk, hw_out, o, wt, dyi_rows, threads);
                    col2im_sample(&g, dcols, dx);
                });
            }
        };
        if chw > 0 {
            if parallel {
                dx_all
                    .par_chunks_mut(chw)
                    .zip(parts.par_chunks_mut(o * ckk + o))
                    .enumerate()
                    .for_each(|(i, (dx, part))| sample(i, dx, part));
            } else {
                dx_all
                    .chunks_mut(chw)
                    .zip(parts.chunks_mut(o * ckk + o))
                    .enumerate()
                    .for_each(|(i, (dx, part))| sample(i, dx, part));
            }
        }
        for part in parts.chunks(o * ckk + o) {
            for (acc, &v) in dwb.iter_mut().zip(part) {
                *acc += v;
            }
        }
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

// ---- group norm (+ SiLU) --------------------------------------------------------------------

/// torch.nn.GroupNorm over [B, C, ...] with per-channel affine, optionally followed by SiLU:
/// args (x, weight [C], bias [C]). Statistics accumulate in f64 per (batch, group).
#[derive(Debug, Clone, Copy)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

/// The backward of [`GroupNorm`]: args (x, [weight; bias] as [2, C], grad of the output) ->
/// [dx (x's size), dweight (C), dbias (C)] packed in one vector.
struct GroupNormBackward(GroupNorm);

/// Per (batch, group) mean and 1/std of `x` (batch-major, `per` values per group), two passes
/// with f64 lane accumulators (independent chains, so the loops vectorise; fixed order).
fn group_stats(x: &[f32], per: usize, eps: f32) -> Vec<(f32, f32)> {
    x.par_chunks(per).map(|g| mean_rstd(g, eps)).collect()
}

multiversion! {
    fn mean_rstd(g: &[f32], eps: f32) -> (f32, f32) {
        let per = g.len() as f64;
        let mean = lanes_sum_f64(g, |v| v as f64) / per;
        let var = lanes_sum_f64(g, |v| (v as f64 - mean) * (v as f64 - mean)) / per;
        (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
    }
}

#[inline(always)]
fn lanes_sum_f64(v: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f64>() + chunks.remainder().iter().map(|&x| f(x)).sum::<f64>()
}

/// 1 / (1 + e^-v) through [`exp_nonpositive`] of -|v| (no overflow either side, branch-free, so
/// loops over it vectorise; libm's expf is a scalar call).
#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    let e = exp_nonpositive(-v.abs());
    let r = 1.0 / (1.0 + e);
    if v >= 0.0 {
        r
    } else {
        e * r
    }
}

/// Elements per rayon task of the elementwise kernels (SiLU): large enough that each task is
/// one vectorised loop, small enough to balance two to a few dozen threads.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

multiversion! {
    fn silu_chunk(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * sigmoid(v);
        }
    }
}

multiversion! {
    fn silu_backward_chunk(x: &[f32], dy: &[f32], out: &mut [f32]) {
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
            let s = sigmoid(v);
            *o = g * (s + v * s * (1.0 - s));
        }
    }
}

multiversion! {
    /// One (batch, group) of the forward: y = x * scale_c + shift_c per channel, SiLU after it
    /// when `silu`.
    fn group_norm_forward_group(
        dst: &mut [f32],
        src: &[f32],
        scale_shift: &[(f32, f32)],
        spatial: usize,
        silu: bool,
    ) {
        for (ci, &(scale, shift)) in scale_shift.iter().enumerate() {
            let range = ci * spatial..(ci + 1) * spatial;
            let (d, x) = (&mut dst[range.clone()], &src[range]);
            if silu {
                for (d, &s) in d.iter_mut().zip(x) {
                    let y = s * scale + shift;
                    *d = y * sigmoid(y);
                }
            } else {
                for (d, &s) in d.iter_mut().zip(x) {
                    *d = s * scale + shift;
                }
            }
        }
    }
}

/// x̂ and dy (the gradient at the norm's output, through the SiLU when fused) of one element.
#[inline(always)]
fn group_norm_dy(x: f32, dz: f32, mean: f32, rstd: f32, w: f32, b: f32, silu: bool) -> (f32, f32) {
    let xhat = (x - mean) * rstd;
    let dy = if silu {
        let y = xhat * w + b;
        let s = sigmoid(y);
        dz * (s + y * s * (1.0 - s))
    } else {
        dz
    };
    (xhat, dy)
}

multiversion! {
    /// One (batch, group) of the backward: dx into `dxg`, this group's dweight / dbias per
    /// channel into `dw` / `db` (w, b: the group's channels). Sums in f64 over fixed lanes.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_backward_group(
        dxg: &mut [f32],
        xg: &[f32],
        dzg: &[f32],
        stats: (f32, f32),
        w: &[f32],
        b: &[f32],
        spatial: usize,
        silu: bool,
        dw: &mut [f64],
        db: &mut [f64],
    ) {
        let (mean, rstd) = stats;
        // 1. dy into dxg as dx̂ = dy * w, the dweight/dbias partials, the two group sums
        let (mut sum_dxhat, mut sum_dxhat_xhat) = ([0f64; LANES], [0f64; LANES]);
        for ci in 0..w.len() {
            let (wc, bc) = (w[ci], b[ci]);
            let (mut aw, mut ab) = ([0f64; LANES], [0f64; LANES]);
            let range = ci * spatial..(ci + 1) * spatial;
            let (d, x, z) = (&mut dxg[range.clone()], &xg[range.clone()], &dzg[range]);
            let mut lane = |l: usize, d: &mut f32, x: f32, z: f32| {
                let (xhat, dy) = group_norm_dy(x, z, mean, rstd, wc, bc, silu);
                aw[l] += (dy * xhat) as f64;
                ab[l] += dy as f64;
                let dxhat = dy * wc;
                sum_dxhat[l] += dxhat as f64;
                sum_dxhat_xhat[l] += (dxhat * xhat) as f64;
                *d = dxhat;
            };
            let mut dc = d.chunks_exact_mut(LANES);
            let (mut xc, mut zc) = (x.chunks_exact(LANES), z.chunks_exact(LANES));
            for ((dl, xl), zl) in (&mut dc).zip(&mut xc).zip(&mut zc) {
                for l in 0..LANES {
                    lane(l, &mut dl[l], xl[l], zl[l]);
                }
            }
            let tail = dc.into_remainder().iter_mut();
            for ((dl, &xl), &zl) in tail.zip(xc.remainder()).zip(zc.remainder()) {
                lane(0, dl, xl, zl);
            }
            dw[ci] = aw.iter().sum();
            db[ci] = ab.iter().sum();
        }
        // 2. dx = rstd * (dx̂ - mean(dx̂) - x̂ * mean(dx̂ * x̂))
        let per = xg.len() as f64;
        let m1 = (sum_dxhat.iter().sum::<f64>() / per) as f32;
        let m2 = (sum_dxhat_xhat.iter().sum::<f64>() / per) as f32;
        for (d, &xv) in dxg.iter_mut().zip(xg) {
            let xhat = (xv - mean) * rstd;
            *d = rstd * (*d - m1 - xhat * m2);
        }
    }
}

struct GnDims {
    channels: usize,
    /// Spatial values per channel.
    spatial: usize,
    /// Channels per group.
    cpg: usize,
}

impl GroupNorm {
    fn dims(&self, shape: &Shape, op: &str) -> Result<GnDims> {
        let d = shape.dims();
        if d.len() < 2 {
            bail!("{op}: needs [B, C, ...], got {d:?}");
        }
        let channels = d[1];
        if self.groups == 0 || !channels.is_multiple_of(self.groups) {
            bail!("{op}: {channels} channels in {} groups", self.groups);
        }
        Ok(GnDims {
            channels,
            spatial: d[2..].iter().product(),
            cpg: channels / self.groups,
        })
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "flashctl-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(xl.shape(), "group_norm")?;
        let (x, w, b) = (
            f32_data(xs, xl, "group_norm")?,
            f32_data(ws, wl, "group_norm")?,
            f32_data(bs, bl, "group_norm")?,
        );
        if w.len() != dims.channels || b.len() != dims.channels {
            bail!(
                "group_norm: affine of {} for {} channels",
                w.len(),
                dims.channels
            );
        }
        let per = dims.cpg * dims.spatial;
        let stats = group_stats(x, per, self.eps);
        let mut out = vec![0f32; x.len()];
        let groups = self.groups;
        out.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .enumerate()
            .for_each(|(bg, (dst, src))| {
                let (mean, rstd) = stats[bg];
                let g = bg % groups;
                let scale_shift: Vec<(f32, f32)> = (g * dims.cpg..(g + 1) * dims.cpg)
                    .map(|c| (rstd * w[c], b[c] - mean * rstd * w[c]))
                    .collect();
                group_norm_forward_group(dst, src, &scale_shift, dims.spatial, self.silu);
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let wb = Tensor::stack(&[w, b], 0)?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &wb,
            &grad.contiguous()?,
            &GroupNormBackward(*self),
        )?;
        unpack3(&packed, [x, w, b])
    }
}

impl CustomOp3 for GroupNormBackward {
    fn name(&self) -> &'static str {
        "flashctl-group-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        wbs: &CpuStorage,
        wbl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gn = self.0;
        let dims = gn.dims(xl.shape(), "group_norm backward")?;
        let (x, wb, dz) = (
            f32_data(xs, xl, "group_norm backward")?,
            f32_data(wbs, wbl, "group_norm backward")?,
            f32_data(gs, gl, "group_norm backward")?,
        );
        let (w, b) = wb.split_at(dims.channels);
        let per = dims.cpg * dims.spatial;
        let stats = group_stats(x, per, gn.eps);
        // per (batch, group): dx, and this group's partial sums of dweight and dbias per channel
        let mut dx = vec![0f32; x.len()];
        let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(dz.par_chunks(per)))
            .enumerate()
            .map(|(bg, (dxg, (xg, dzg)))| {
                let g = bg % gn.groups;
                let (mut dw, mut db) = (vec![0f64; dims.cpg], vec![0f64; dims.cpg]);
                let channels = g * dims.cpg..(g + 1) * dims.cpg;
                group_norm_backward_group(
                    dxg,
                    xg,
                    dzg,
                    stats[bg],
                    &w[channels.clone()],
                    &b[channels],
                    dims.spatial,
                    gn.silu,
                    &mut dw,
                    &mut db,
                );
                (dw, db)
            })
            .collect();
        let c = dims.channels;
        let mut out = dx;
        out.resize(x.len() + 2 * c, 0.0);
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        for (bg, (pw, pb)) in partials.iter().enumerate() {
            let g = bg % gn.groups;
            for ci in 0..dims.cpg {
                dw[g * dims.cpg + ci] += pw[ci];
                db[g * dims.cpg + ci] += pb[ci];
            }
        }
        for ch in 0..c {
            out[x.len() + ch] = dw[ch] as f32;
            out[x.len() + c + ch] = db[ch] as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

// ---- softmax over the last axis -------------------------------------------------------------

/// Max-subtracted softmax over the last axis, with its backward
/// dx = y * (dy - sum(dy * y)).
pub struct SoftmaxLastDim;

struct SoftmaxLastDimBackward;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "flashctl-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, "softmax")?;
        let n = *layout.shape().dims().last().unwrap_or(&1);
        if n == 0 {
            return Ok((CpuStorage::F32(vec![]), layout.shape().clone()));
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(d, s)| {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (dv, &sv) in d.iter_mut().zip(s) {
                    *dv = exp_nonpositive(sv - max);
                    sum += *dv;
                }
                let inv = 1.0 / sum;
                d.iter_mut().for_each(|v| *v *= inv);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SoftmaxLastDimBackward,
        )?))
    }
}

impl candle_core::CustomOp2 for SoftmaxLastDimBackward {
    fn name(&self) -> &'static str {
        "flashctl-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_data(ys, yl, "softmax backward")?;
        let dy = f32_data(gs, gl, "softmax backward")?;
        let n = *yl.shape().dims().last().unwrap_or(&1);
        let mut out = vec![0f32; y.len()];
        if n > 0 {
            out.par_chunks_mut(n)
                .zip(y.par_chunks(n).zip(dy.par_chunks(n)))
                .for_each(|(d, (yr, gr))| {
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((dv, &yv), &gv) in d.iter_mut().zip(yr).zip(gr) {
                        *dv = yv * (gv - dot);
                    }
                });
        }
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

// ---- SiLU -----------------------------------------------------------------------------------

/// x * sigmoid(x) with dx = dy * (s + x s (1 - s)).
pub struct Silu;

struct SiluBackward;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "flashctl-silu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, "silu")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(o, x)| silu_chunk(x, o));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SiluBackward)?,
        ))
    }
}

impl candle_core::CustomOp2 for SiluBackward {
    fn name(&self) -> &'static str {
        "flashctl-silu-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(xs, xl, "silu backward")?;
        let dy = f32_data(gs, gl, "silu backward")?;
        if x.len() != dy.len() {
            bail!("silu backward: {} values, {} gradients", x.len(), dy.len());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                x.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(dy.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(o, (x, dy))| silu_backward_chunk(x, dy, o));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

// ---- attention ------------------------------------------------------------------------------

/// softmax(q k^T * scale) v over [B, heads, N, d] (q: N queries, k/v: M keys), one (batch,
/// head) at a time with its score matrix in a scratch buffer: the [B, heads, N, M] scores and
/// probabilities are never materialised, and the backward recomputes them.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub scale: f32,
}

/// The backward of [`Attention`]: args (q, k and v stacked into one vector, the forward output,
/// its gradient) -> [dq, dk, dv] packed in one vector.
struct AttentionBackward {
    scale: f32,
    /// [B*heads, N, M, d]
    dims: [usize; 4],
}

fn attention_dims(q: &Shape, k: &Shape, v: &Shape) -> Result<[usize; 4]> {
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    if qd.len() < 2 || kd.len() != qd.len() || vd != kd {
        bail!("attention: q {qd:?}, k {kd:?}, v {vd:?}");
    }
    let r = qd.len();
    let (n, d, m) = (qd[r - 2], qd[r - 1], kd[r - 2]);
    if kd[r - 1] != d || qd[..r - 2] != kd[..r - 2] {
        bail!("attention: q {qd:?}, k {kd:?}");
    }
    Ok([qd[..r - 2].iter().product(), n, m, d])
}

/// Row-wise softmax(q k^T * scale) of one (batch, head) into `p` [n, m].
fn attention_probs(q: &[f32], k: &[f32], n: usize, m: usize, d: usize, scale: f32, p: &mut [f32]) {
    matmul_into(
        p,
        n,
        m,
        d,
        MatRef::rows(&q[..n * d], d),
        MatRef::transposed(&k[..m * d], d),
        1,
    );
    softmax_rows(p, n, m, scale);
}

multiversion! {
    /// Each of the first `n` rows of `p` ([n, m] scores) into softmax(scale * row).
    fn softmax_rows(p: &mut [f32], n: usize, m: usize, scale: f32) {
        for row in p.chunks_mut(m.max(1)).take(n) {
            let max = lanes_max(row) * scale;
            for s in row.iter_mut() {
                *s = exp_nonpositive(*s * scale - max);
            }
            let inv = 1.0 / lanes_sum(row);
            for s in row.iter_mut() {
                *s *= inv;
            }
        }
    }
}

/// Lanes for the row reductions: independent accumulators, so the loop is not one dependency
/// chain (a plain fold cannot be reordered, hence not vectorised). Fixed order: deterministic.
const LANES: usize = 8;

#[inline(always)]
fn lanes_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let tail = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn lanes_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// e^x for the max-subtracted scores of a softmax (x <= 0), branch-free so a loop over a row
/// vectorises (libm's expf is a scalar call and was 8.6% of a UNet training step, measured).
/// Cody-Waite range reduction x = n ln2 + f, |f| <= ln2/2, and a degree-6 Taylor polynomial:
/// relative error below 3e-7, ~2 ulp (tested against f32::exp); inputs below -87 give 0 (as e^x does,
/// to f32 precision, up to denormals).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 0.0);
    // round to nearest by the 1.5 * 2^23 trick (`f32::round` is a libm call, which stops the
    // loop from vectorising)
    const ROUND: f32 = 12_582_912.0;
    let rounded = x * LOG2E + ROUND;
    let n = rounded - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let poly = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    // 2^n by building the exponent bits (n in [-126, 0] after the clamp). n as an integer is
    // read off `rounded`'s low mantissa bits: `n as i32` is a saturating, NaN-checking scalar
    // conversion that kept this loop half scalar (measured with perf annotate).
    let n_int = (rounded.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    poly * scale
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "flashctl-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [bh, n, m, d] = attention_dims(ql.shape(), kl.shape(), vl.shape())?;
        let (q, k, v) = (
            f32_data(qs, ql, "attention")?,
            f32_data(ks, kl, "attention")?,
            f32_data(vs, vl, "attention")?,
        );
        let mut out = vec![0f32; bh * n * d];
        if n * d > 0 {
            out.par_chunks_mut(n * d).enumerate().for_each(|(h, o)| {
                let (qh, kh, vh) = (&q[h * n * d..], &k[h * m * d..], &v[h * m * d..]);
                let mut p = vec![0f32; n * m];
                attention_probs(qh, kh, n, m, d, self.scale, &mut p);
                // O = P V
                matmul_into(
                    o,
                    n,
                    d,
                    m,
                    MatRef::rows(&p, m),
                    MatRef::rows(&vh[..m * d], d),
                    1,
                );
            });
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = attention_dims(q.shape(), k.shape(), v.shape())?;
        let qkv = Tensor::cat(&[q.flatten_all()?, k.flatten_all()?, v.flatten_all()?], 0)?;
        let packed = qkv.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad.contiguous()?,
            &AttentionBackward {
                scale: self.scale,
                dims,
            },
        )?;
        unpack3(&packed, [q, k, v])
    }
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "flashctl-attention-backward"
    }

    fn cpu_fwd(
        &self,
        qkvs: &CpuStorage,
        qkvl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [bh, n, m, d] = self.dims;
        let qkv = f32_data(qkvs, qkvl, "attention backward")?;
        let o = f32_data(os, ol, "attention backward")?;
        let dout = f32_data(gs, gl, "attention backward")?;
        let (nq, nk) = (bh * n * d, bh * m * d);
        if qkv.len() != nq + 2 * nk || o.len() != nq || dout.len() != nq {
            bail!("attention backward: sizes do not match {:?}", self.dims);
        }
        let (q, kv) = qkv.split_at(nq);
        let (k, v) = kv.split_at(nk);
        // per (batch, head): dq [n, d] then dk, dv [m, d] each, in one chunk
        let chunk = n * d + 2 * m * d;
        let mut parts = vec![0f32; bh * chunk];
        if chunk > 0 {
            parts
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(h, part)| {
                    let (dq, dkv) = part.split_at_mut(n * d);
                    let (dk, dv) = dkv.split_at_mut(m * d);
                    let (qh, kh, vh) = (&q[h * n * d..], &k[h * m * d..], &v[h * m * d..]);
                    let (oh, doh) = (&o[h * n * d..][..n * d], &dout[h * n * d..][..n * d]);
                    let (qh, kh, vh) = (&qh[..n * d], &kh[..m * d], &vh[..m * d]);
                    let mut p = vec![0f32; n * m];
                    attention_probs(qh, kh, n, m, d, self.scale, &mut p);
                    // dV = P^T dO ; dP = dO V^T
                    matmul_into(
                        dv,
                        m,
                        d,
                        n,
                        MatRef::transposed(&p, m),
                        MatRef::rows(doh, d),
                        1,
                    );
                    let mut ds = vec![0f32; n * m];
                    matmul_into(
                        &mut ds,
                        n,
                        m,
                        d,
                        MatRef::rows(doh, d),
                        MatRef::transposed(vh, d),
                        1,
                    );
                    // dS = P (dP - D) * scale, D_i = sum_c dO_ic O_ic
                    for i in 0..n {
                        let di: f32 = doh[i * d..][..d]
                            .iter()
                            .zip(&oh[i * d..][..d])
                            .map(|(a, b)| a * b)
                            .sum();
                        for (dsv, &pv) in ds[i * m..][..m].iter_mut().zip(&p[i * m..][..m]) {
                            *dsv = pv * (*dsv - di) * self.scale;
                        }
                    }
                    // dQ = dS K ; dK = dS^T Q
                    matmul_into(dq, n, d, m, MatRef::rows(&ds, m), MatRef::rows(kh, d), 1);
                    matmul_into(
                        dk,
                        m,
                        d,
                        n,
                        MatRef::transposed(&ds, m),
                        MatRef::rows(qh, d),
                        1,
                    );
                });
        }
        let mut out = vec![0f32; nq + 2 * nk];
        let (oq, okv) = out.split_at_mut(nq);
        let (ok, ov) = okv.split_at_mut(nk);
        for (h, part) in parts.chunks(chunk.max(1)).enumerate().take(bh) {
            oq[h * n * d..][..n * d].copy_from_slice(&part[..n * d]);
            ok[h * m * d..][..m * d].copy_from_slice(&part[n * d..][..m * d]);
            ov[h * m * d..][..m * d].copy_from_slice(&part[n * d + m * d..][..m * d]);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    //! Every fused kernel against the composite it replaces: same values, same gradients.
    use crate::eager::tests::max_diff;
    use crate::{EagerOps, Kernels, Ops};
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::VarBuilder;

    fn ops(kernels: Kernels) -> EagerOps {
        EagerOps::with_kernels(VarBuilder::zeros(DType::F32, &Device::Cpu), kernels)
    }

    fn var(shape: &[usize], seed: u64) -> Var {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Value and input gradients of `f` (under a fixed random cotangent) with fused kernels and
    /// with composites, compared within `tol`.
    fn check(name: &str, inputs: &[Var], tol: f32, f: impl Fn(&EagerOps, &[Tensor]) -> Tensor) {
        let run = |k| {
            let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ops(k), &xs);
            let cot = var(y.dims(), 99);
            let loss = (&y * cot.as_tensor()).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let grads: Vec<Tensor> = inputs
                .iter()
                .map(|v| g.get(v.as_tensor()).expect("gradient").clone())
                .collect();
            (y, grads)
        };
        let (y1, g1) = run(Kernels::Fused);
        let (y2, g2) = run(Kernels::Composite);
        assert_eq!(y1.dims(), y2.dims(), "{name}: shape");
        let dy = max_diff(&y1, &y2);
        assert!(dy < tol, "{name}: value differs by {dy}");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let d = max_diff(a, b);
            assert!(d < tol, "{name}: gradient of input {i} differs by {d}");
        }
    }

    #[test]
    fn group_norm_and_its_silu_fusion_match_the_composite() {
        let (x, w, b) = (var(&[3, 8, 5, 4], 1), var(&[8], 2), var(&[8], 3));
        for groups in [1, 2, 8] {
            check(
                "group_norm",
                &[x.clone(), w.clone(), b.clone()],
                1e-4,
                |o, t| o.group_norm(&t[0], groups, &t[1], &t[2], 1e-5).unwrap(),
            );
            check(
                "group_norm_silu",
                &[x.clone(), w.clone(), b.clone()],
                1e-4,
                |o, t| {
                    o.group_norm_silu("n", &t[0], groups, &t[1], &t[2], 1e-5)
                        .unwrap()
                },
            );
        }
        // rank 3 ([B, C, N], as the attention blocks call it)
        let x3 = var(&[2, 4, 7], 4);
        check(
            "group_norm rank 3",
            &[x3, var(&[4], 5), var(&[4], 6)],
            1e-4,
            |o, t| o.group_norm(&t[0], 2, &t[1], &t[2], 1e-6).unwrap(),
        );
    }

    #[test]
    fn silu_and_softmax_match_the_composite() {
        check("silu", &[var(&[4, 33], 7)], 1e-5, |o, t| {
            o.silu(&t[0]).unwrap()
        });
        check("softmax", &[var(&[2, 3, 17], 8)], 1e-5, |o, t| {
            o.softmax_last_dim(&t[0]).unwrap()
        });
    }

    #[test]
    fn softmax_exp_is_accurate_over_its_range() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (super::exp_nonpositive(x), x.exp());
            if want > f32::MIN_POSITIVE {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert_eq!(super::exp_nonpositive(-1e30), super::exp_nonpositive(-87.0));
    }

    #[test]
    fn attention_matches_the_composite() {
        // queries and keys of different lengths, head dim 8, 2 heads
        let (q, k, v) = (
            var(&[2, 2, 9, 8], 9),
            var(&[2, 2, 11, 8], 10),
            var(&[2, 2, 11, 8], 11),
        );
        check("attention", &[q, k, v], 1e-4, |o, t| {
            o.attention(&t[0], &t[1], &t[2], 0.35).unwrap()
        });
    }

    #[test]
    fn conv2d_kernel_matches_candle_conv_with_bias_in_value_and_gradient() {
        for (c, o, k, h, w, stride, pad, batch) in [
            (3, 5, 3, 8, 8, 1, 1, 2),
            (4, 6, 3, 9, 7, 2, 1, 3),
            (2, 3, 1, 5, 5, 1, 0, 1),
            // 11x9, not 11x10: candle's own conv2d backward (the reference) fails with a shape
            // mismatch on an 11x10 input at kernel 5, stride 2, padding 2
            (2, 2, 5, 11, 9, 2, 2, 2),
            (3, 4, 3, 7, 7, 1, 0, 1),
            // stride 1 takes dx as a transposed convolution (padding k-1-pad): wider kernels,
            // non-square inputs, padding k-1 (no padding left); padding >= k falls back to col2im
            (3, 4, 5, 9, 6, 1, 2, 2),
            (2, 3, 3, 6, 5, 1, 2, 1),
            (2, 2, 1, 4, 5, 1, 1, 1),
        ] {
            let inputs = [
                var(&[batch, c, h, w], 12),
                var(&[o, c, k, k], 13),
                var(&[o], 14),
            ];
            check("conv2d", &inputs, 2e-3, |ops, t| {
                ops.conv2d(&t[0], &t[1], Some(&t[2]), stride, pad).unwrap()
            });
        }
    }

    /// Thread count and batch split must not change a bit of the result (bit-exact resume on a
    /// machine with other cores than the one that started the run).
    #[test]
    fn conv2d_backward_is_the_same_in_one_thread_and_many() {
        let (x, w, b) = (
            var(&[5, 3, 6, 6], 15),
            var(&[4, 3, 3, 3], 16),
            var(&[4], 17),
        );
        let grads = || {
            let y = ops(Kernels::Fused)
                .conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 1, 1)
                .unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            g.get(w.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let many = grads();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(grads);
        assert_eq!(
            many.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
