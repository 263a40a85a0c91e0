//! Sample-quality metrics on flat row-major sets (n rows of d values), in f64.
//!
//! - `swd`: sliced Wasserstein-1 distance, averaged over random unit directions;
//! - `mmd`: squared maximum mean discrepancy, unbiased, with a sum of RBF kernels;
//! - `frechet_distance`: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) of Gaussian
//!   fits (FID's formula, here on flashctl's own feature network);
//! - `precision_recall`: k-NN manifold precision and recall (Kynkaanniemi et al. 2019);
//! - `psnr`: peak signal-to-noise ratio for a given data range.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A set of `n` points in `d` dimensions.
pub struct Points<'a> {
    pub data: &'a [f32],
    pub d: usize,
}

impl<'a> Points<'a> {
    pub fn new(data: &'a [f32], d: usize) -> Self {
        assert!(d > 0 && data.len().is_multiple_of(d), "ragged point set");
        Self { data, d }
    }
    pub fn n(&self) -> usize {
        self.data.len() / self.d
    }
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// Sliced Wasserstein-1 over `directions` random directions (seeded). Sets may differ in size:
/// each 1-D distance compares quantiles at the larger set's resolution.
pub fn swd(a: &Points, b: &Points, directions: usize, seed: u64) -> f64 {
    assert_eq!(a.d, b.d);
    let mut rng = StdRng::seed_from_u64(seed);
    let m = a.n().max(b.n());
    let mut total = 0.0;
    for _ in 0..directions {
        let mut dir: Vec<f64> = (0..a.d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        dir.iter_mut().for_each(|v| *v /= norm);
        let proj = |p: &Points| -> Vec<f64> {
            let mut v: Vec<f64> = (0..p.n())
                .map(|i| p.row(i).iter().zip(&dir).map(|(x, w)| *x as f64 * w).sum())
                .collect();
            v.sort_by(|x, y| x.partial_cmp(y).unwrap());
            v
        };
        let (pa, pb) = (proj(a), proj(b));
        let q = |v: &[f64], i: usize| v[(i * v.len()) / m];
        total += (0..m).map(|i| (q(&pa, i) - q(&pb, i)).abs()).sum::<f64>() / m as f64;
    }
    total / directions as f64
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// Unbiased MMD^2 with k(x, y) = sum_s exp(-|x - y|^2 / (2 s^2)) over `bandwidths`.
pub fn mmd(a: &Points, b: &Points, bandwidths: &[f64]) -> f64 {
    assert_eq!(a.d, b.d);
    let k = |x: &[f32], y: &[f32]| -> f64 {
        let d2 = sq_dist(x, y);
        bandwidths.iter().map(|s| (-d2 / (2.0 * s * s)).exp()).sum()
    };
    let within = |p: &Points| -> f64 {
        let n = p.n();
        let mut s = 0.0;
        for i in 0..n {
            for j in (i + 1)..n {
                s += k(p.row(i), p.row(j));
            }
        }
        2.0 * s / (n * (n - 1)) as f64
    };
    let mut cross = 0.0;
    for i in 0..a.n() {
        for j in 0..b.n() {
            cross += k(a.row(i), b.row(j));
        }
    }
    within(a) + within(b) - 2.0 * cross / (a.n() * b.n()) as f64
}

/// Mean and covariance (divided by n - 1) of a point set.
pub fn gaussian_fit(p: &Points) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (p.n(), p.d);
    let mut mu = vec![0.0; d];
    for i in 0..n {
        for (m, x) in mu.iter_mut().zip(p.row(i)) {
            *m += *x as f64;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for i in 0..n {
        let r = p.row(i);
        for a in 0..d {
            let da = r[a] as f64 - mu[a];
            for b in a..d {
                cov[a * d + b] += da * (r[b] as f64 - mu[b]);
            }
        }
    }
    for a in 0..d {
        for b in a..d {
            let v = cov[a * d + b] / (n.max(2) - 1) as f64;
            cov[a * d + b] = v;
            cov[b * d + a] = v;
        }
    }
    (mu, cov)
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: (values, vectors as
/// columns of a row-major d x d matrix).
pub fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum();
        let scale: f64 = (0..d).map(|i| a[i * d + i] * a[i * d + i]).sum::<f64>();
        if off <= 1e-22 * scale.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// Symmetric PSD square root (negative eigenvalues from round-off clipped to 0).
fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (vals, vecs) = symmetric_eigen(m, d);
    let mut out = vec![0.0; d * d];
    for (k, &l) in vals.iter().enumerate() {
        let s = l.max(0.0).sqrt();
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] += s * vecs[i * d + k] * vecs[j * d + k];
            }
        }
    }
    out
}

/// Frechet distance between Gaussian fits of two sets.
pub fn frechet_distance(a: &Points, b: &Points) -> f64 {
    assert_eq!(a.d, b.d);
    let d = a.d;
    let (m1, s1) = gaussian_fit(a);
    let (m2, s2) = gaussian_fit(b);
    let mean_term: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y) * (x - y)).sum();
    let r1 = sqrt_psd(&s1, d);
    let inner = matmul(&matmul(&r1, &s2, d), &r1, d);
    // symmetrise against round-off before the eigen-decomposition
    let inner: Vec<f64> = (0..d * d)
        .map(|ij| 0.5 * (inner[ij] + inner[(ij % d) * d + ij / d]))
        .collect();
    let (vals, _) = symmetric_eigen(&inner, d);
    let tr_sqrt: f64 = vals.iter().map(|l| l.max(0.0).sqrt()).sum();
    let tr = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    (mean_term + tr(&s1) + tr(&s2) - 2.0 * tr_sqrt).max(0.0)
}

/// k-th nearest-neighbour distance (squared) of each point within its own set.
fn knn_radii(p: &Points, k: usize) -> Vec<f64> {
    (0..p.n())
        .map(|i| {
            let mut d: Vec<f64> = (0..p.n())
                .filter(|&j| j != i)
                .map(|j| sq_dist(p.row(i), p.row(j)))
                .collect();
            let k = k.min(d.len()).max(1);
            d.select_nth_unstable_by(k - 1, |x, y| x.partial_cmp(y).unwrap());
            d[k - 1]
        })
        .collect()
}

/// (precision, recall): the fraction of generated points inside the real set's k-NN balls, and
/// of real points inside the generated set's.
pub fn precision_recall(real: &Points, fake: &Points, k: usize) -> (f64, f64) {
    let covered = |from: &Points, radii: &[f64], probe: &Points| -> f64 {
        let hits = (0..probe.n())
            .filter(|&i| (0..from.n()).any(|j| sq_dist(probe.row(i), from.row(j)) <= radii[j]))
            .count();
        hits as f64 / probe.n() as f64
    };
    let rr = knn_radii(real, k);
    let rf = knn_radii(fake, k);
    (covered(real, &rr, fake), covered(fake, &rf, real))
}

/// PSNR in dB for values spanning `range` (2 for [-1, 1] images).
pub fn psnr(a: &[f32], b: &[f32], range: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (range * range / mse.max(1e-20)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swd_of_a_shift_is_the_projected_shift() {
        // a set and the same set shifted by (3, 0): every projection shifts by 3 |cos|;
        // the mean |cos| of a uniform direction in 2-D is 2/pi
        let a: Vec<f32> = (0..400)
            .flat_map(|i| [(i % 20) as f32, (i / 20) as f32])
            .collect();
        let b: Vec<f32> = a.chunks(2).flat_map(|p| [p[0] + 3.0, p[1]]).collect();
        let v = swd(&Points::new(&a, 2), &Points::new(&b, 2), 2000, 1);
        assert!((v - 3.0 * 2.0 / std::f64::consts::PI).abs() < 0.1, "{v}");
        assert_eq!(swd(&Points::new(&a, 2), &Points::new(&a, 2), 10, 1), 0.0);
    }

    #[test]
    fn mmd_is_zero_for_identical_sets_and_grows_with_distance() {
        let a: Vec<f32> = (0..100)
            .flat_map(|i| [(i as f32).sin(), (i as f32).cos()])
            .collect();
        let near: Vec<f32> = a.iter().map(|v| v + 0.1).collect();
        let far: Vec<f32> = a.iter().map(|v| v + 2.0).collect();
        let pa = Points::new(&a, 2);
        let m_near = mmd(&pa, &Points::new(&near, 2), &[0.5, 1.0]);
        let m_far = mmd(&pa, &Points::new(&far, 2), &[0.5, 1.0]);
        assert!(m_near.abs() < m_far && m_far > 0.5, "{m_near} {m_far}");
    }

    #[test]
    fn frechet_distance_of_known_gaussians() {
        // two diagonal Gaussians: FD = |mu1-mu2|^2 + sum (s1 - s2)^2 per axis (std devs)
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20000;
        let a: Vec<f32> = (0..n * 2)
            .map(|i| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (if i % 2 == 0 { z } else { 2.0 * z }) as f32
            })
            .collect();
        let b: Vec<f32> = (0..n * 2)
            .map(|i| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (if i % 2 == 0 { 1.0 + 3.0 * z } else { 2.0 * z }) as f32
            })
            .collect();
        let fd = frechet_distance(&Points::new(&a, 2), &Points::new(&b, 2));
        let want = 1.0 + (3.0f64 - 1.0).powi(2);
        assert!((fd - want).abs() < 0.15, "{fd} vs {want}");
    }

    #[test]
    fn jacobi_reconstructs_a_symmetric_matrix() {
        let m = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 1.0];
        let (vals, vecs) = symmetric_eigen(&m, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3)
                    .map(|k| vals[k] * vecs[i * 3 + k] * vecs[j * 3 + k])
                    .sum();
                assert!((r - m[i * 3 + j]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn precision_recall_of_disjoint_and_equal_sets() {
        let a: Vec<f32> = (0..50).flat_map(|i| [i as f32, 0.0]).collect();
        let far: Vec<f32> = (0..50).flat_map(|i| [i as f32, 100.0]).collect();
        assert_eq!(
            precision_recall(&Points::new(&a, 2), &Points::new(&a, 2), 3),
            (1.0, 1.0)
        );
        assert_eq!(
            precision_recall(&Points::new(&a, 2), &Points::new(&far, 2), 3),
            (0.0, 0.0)
        );
    }

    #[test]
    fn psnr_of_a_known_error() {
        // constant error 0.2 on range 2: 10 log10(4 / 0.04) = 20 dB
        let a = vec![0.0f32; 10];
        let b = vec![0.2f32; 10];
        assert!((psnr(&a, &b, 2.0) - 20.0).abs() < 1e-5);
    }
}
