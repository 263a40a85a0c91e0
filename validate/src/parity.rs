//! Parity statistics between a runtime's output and the eager reference.

use serde::{Deserialize, Deserializer, Serialize};

/// JSON has no infinity: serde_json writes it as null, read back here as infinity.
fn null_as_inf<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// An absolute + relative tolerance, |a - b| <= atol + rtol * |b| elementwise, and the fraction
/// of elements allowed outside it (never NaN/Inf: those always fail).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    pub max_outlier_fraction: f64,
}

/// Named tolerance levels, per dtype of the compared graph.
pub const LEVELS: &[&str] = &["exact", "close", "approximate", "very-approximate"];

impl Tolerance {
    /// fp32 default: the exported sampler must match its eager reference to 1e-4 absolute.
    pub const FP32: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 0.0,
        max_outlier_fraction: 0.0,
    };

    /// A named level for `fp32` or `fp16` graphs: exact (bitwise), close (fp32 1e-5), approximate
    /// (fp32 1e-4), very-approximate (fp32 1e-3 with 0.1% outliers); fp16 levels are ~100x looser.
    pub fn level(name: &str, dtype: &str) -> Result<Tolerance, String> {
        let scale = match dtype {
            "fp32" => 1.0,
            "fp16" => 100.0,
            o => return Err(format!("no tolerance levels for dtype `{o}` (fp32, fp16)")),
        };
        let (tol, outliers) = match name {
            "exact" => {
                return Ok(Tolerance {
                    atol: 0.0,
                    rtol: 0.0,
                    max_outlier_fraction: 0.0,
                })
            }
            "close" => (1e-5, 0.0),
            "approximate" => (1e-4, 0.0),
            "very-approximate" => (1e-3, 1e-3),
            o => {
                return Err(format!(
                    "unknown tolerance level `{o}` ({})",
                    LEVELS.join(", ")
                ))
            }
        };
        Ok(Tolerance {
            atol: tol * scale,
            rtol: tol * scale,
            max_outlier_fraction: outliers,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParityStats {
    pub output: String,
    pub elements: usize,
    pub max_abs: f64,
    pub mean_abs: f64,
    /// max |a-b| / max(|b|, 1e-6)
    pub max_rel: f64,
    pub p99_abs: f64,
    /// fraction of elements outside the tolerance
    pub outlier_fraction: f64,
    /// the smallest atol that would have passed with this rtol (every element inside)
    pub min_passing_atol: f64,
    /// the smallest rtol that would have passed with this atol (infinite when an element with
    /// reference value 0 is beyond atol)
    #[serde(deserialize_with = "null_as_inf")]
    pub min_passing_rtol: f64,
    /// count of NaN or Inf in the runtime output
    pub non_finite: usize,
    pub passed: bool,
}

/// Compare `actual` against `expected` (same length) under `tol`.
pub fn compare(output: &str, actual: &[f64], expected: &[f64], tol: Tolerance) -> ParityStats {
    let n = actual.len().min(expected.len());
    let mut diffs = Vec::with_capacity(n);
    let (mut max_abs, mut sum, mut max_rel, mut outliers, mut non_finite) =
        (0f64, 0f64, 0f64, 0usize, 0usize);
    let (mut need_atol, mut need_rtol) = (0f64, 0f64);
    for i in 0..n {
        let (a, b) = (actual[i], expected[i]);
        if !a.is_finite() {
            non_finite += 1;
            outliers += 1;
            continue;
        }
        let d = (a - b).abs();
        diffs.push(d);
        sum += d;
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / b.abs().max(1e-6));
        if d > tol.atol + tol.rtol * b.abs() {
            outliers += 1;
        }
        need_atol = need_atol.max(d - tol.rtol * b.abs());
        if d > tol.atol {
            need_rtol = need_rtol.max(if b == 0.0 {
                f64::INFINITY
            } else {
                (d - tol.atol) / b.abs()
            });
        }
    }
    diffs.sort_by(|a, b| a.total_cmp(b));
    let p99_abs = if diffs.is_empty() {
        0.0
    } else {
        diffs[((diffs.len() as f64 * 0.99).ceil() as usize).clamp(1, diffs.len()) - 1]
    };
    ParityStats {
        output: output.into(),
        elements: n,
        max_abs,
        mean_abs: if n > 0 { sum / n as f64 } else { 0.0 },
        max_rel,
        p99_abs,
        outlier_fraction: if n > 0 {
            outliers as f64 / n as f64
        } else {
            0.0
        },
        min_passing_atol: if non_finite > 0 {
            f64::INFINITY
        } else {
            need_atol
        },
        min_passing_rtol: if non_finite > 0 {
            f64::INFINITY
        } else {
            need_rtol
        },
        non_finite,
        passed: actual.len() == expected.len()
            && non_finite == 0
            && (n == 0 || outliers as f64 / n as f64 <= tol.max_outlier_fraction),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outputs_pass_with_zero_error() {
        let s = compare("y", &[1.0, 2.0], &[1.0, 2.0], Tolerance::FP32);
        assert!(s.passed);
        assert_eq!(s.max_abs, 0.0);
    }

    #[test]
    fn nan_is_never_a_pass() {
        let s = compare("y", &[f64::NAN, 2.0], &[1.0, 2.0], Tolerance::FP32);
        assert!(!s.passed);
        assert_eq!(s.non_finite, 1);
    }

    #[test]
    fn smallest_passing_tolerances_are_reported() {
        let tol = Tolerance {
            atol: 1e-3,
            rtol: 0.0,
            max_outlier_fraction: 0.0,
        };
        // errors 0.002 at |b| = 2 and 0.0005 at |b| = 1
        let s = compare("y", &[2.002, 1.0005], &[2.0, 1.0], tol);
        assert!(!s.passed);
        assert!((s.min_passing_atol - 0.002).abs() < 1e-12);
        assert!((s.min_passing_rtol - 0.0005).abs() < 1e-12);
        let s = compare(
            "y",
            &[2.002, 1.0005],
            &[2.0, 1.0],
            Tolerance {
                atol: 1e-3,
                rtol: 5e-4,
                max_outlier_fraction: 0.0,
            },
        );
        assert!(s.passed, "{s:?}");
    }

    #[test]
    fn levels_and_outlier_allowance() {
        assert_eq!(Tolerance::level("exact", "fp32").unwrap().atol, 0.0);
        assert!(
            Tolerance::level("close", "fp16").unwrap().atol
                > Tolerance::level("close", "fp32").unwrap().atol
        );
        assert!(Tolerance::level("loose", "fp32").is_err());
        // one outlier in 2000 is inside very-approximate's 0.1%, not inside approximate
        let mut a = vec![0.0; 2000];
        a[7] = 1.0;
        let b = vec![0.0; 2000];
        assert!(
            compare(
                "y",
                &a,
                &b,
                Tolerance::level("very-approximate", "fp32").unwrap()
            )
            .passed
        );
        assert!(
            !compare(
                "y",
                &a,
                &b,
                Tolerance::level("approximate", "fp32").unwrap()
            )
            .passed
        );
    }

    #[test]
    fn error_beyond_atol_fails_and_is_measured() {
        let s = compare("y", &[1.0, 2.001], &[1.0, 2.0], Tolerance::FP32);
        assert!(!s.passed);
        assert!((s.max_abs - 0.001).abs() < 1e-9);
        assert_eq!(s.outlier_fraction, 0.5);
    }
}
