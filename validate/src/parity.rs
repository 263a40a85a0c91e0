//! Parity statistics between a runtime's output and the eager reference.

use serde::Serialize;

/// An absolute + relative tolerance: |a - b| <= atol + rtol * |b| elementwise.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    /// fp32 default of the walking skeleton: the exported sampler must match to 1e-4 absolute.
    pub const FP32: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 0.0,
    };
}

#[derive(Debug, Clone, Serialize)]
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
        non_finite,
        passed: actual.len() == expected.len() && outliers == 0 && non_finite == 0,
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
    fn error_beyond_atol_fails_and_is_measured() {
        let s = compare("y", &[1.0, 2.001], &[1.0, 2.0], Tolerance::FP32);
        assert!(!s.passed);
        assert!((s.max_abs - 0.001).abs() < 1e-9);
        assert_eq!(s.outlier_fraction, 0.5);
    }
}
