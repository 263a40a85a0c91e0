//! `flashctl validate --junit FILE`: the validation report as JUnit XML, the format CI systems
//! (GitHub Actions test reporters, GitLab's `artifacts:reports:junit`, Jenkins) show natively.
//!
//! One test suite per comparison (the reference inputs; `--golden`'s goldens), one test case
//! per runtime x output: a parity miss is a `<failure>`, a runtime that could not load the graph
//! or failed to run is an `<error>`, a runtime that is not installed is `<skipped>`.

use crate::validation::{RuntimeReport, ValidationReport};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// XML attribute/text escaping (the five predefined entities).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // control characters other than tab/newline are not allowed in XML 1.0
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

enum Verdict {
    Pass,
    Failure(String, String),
    Error(String),
    Skipped(String),
}

struct Case {
    classname: String,
    name: String,
    seconds: f64,
    verdict: Verdict,
}

fn cases_of(runtimes: &[RuntimeReport]) -> Vec<Case> {
    let mut cases = vec![];
    for r in runtimes {
        let classname = format!(
            "{}{}",
            r.runtime,
            r.provider
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        let seconds = r
            .latency_ms
            .as_ref()
            .and_then(|l| l.get("p50"))
            .map(|ms| ms / 1e3)
            .unwrap_or(0.0);
        let reason = r.reason.clone().unwrap_or_else(|| r.status.clone());
        if r.parity.is_empty() {
            // nothing was compared: the whole runtime is one case
            let verdict = match r.status.as_str() {
                "unavailable" => Verdict::Skipped(format!("not installed: {reason}")),
                "pass" => Verdict::Pass,
                _ => Verdict::Error(reason),
            };
            cases.push(Case {
                classname,
                name: "load and run".into(),
                seconds,
                verdict,
            });
            continue;
        }
        for p in &r.parity {
            let verdict = if p.passed {
                Verdict::Pass
            } else {
                Verdict::Failure(
                    format!(
                        "{} misses parity: max_abs {:.3e}, max_rel {:.3e}, outliers {:.4}%, non-finite {}",
                        p.output,
                        p.max_abs,
                        p.max_rel,
                        100.0 * p.outlier_fraction,
                        p.non_finite
                    ),
                    format!(
                        "elements {}\nmax_abs {:e}\nmean_abs {:e}\np99_abs {:e}\nmax_rel {:e}\noutlier_fraction {}\nmin_passing_atol {:e}\nmin_passing_rtol {:e}\nnon_finite {}",
                        p.elements,
                        p.max_abs,
                        p.mean_abs,
                        p.p99_abs,
                        p.max_rel,
                        p.outlier_fraction,
                        p.min_passing_atol,
                        p.min_passing_rtol,
                        p.non_finite
                    ),
                )
            };
            cases.push(Case {
                classname: classname.clone(),
                name: p.output.clone(),
                seconds,
                verdict,
            });
        }
    }
    cases
}

fn suite(out: &mut String, name: &str, props: &[(&str, String)], cases: &[Case]) {
    let count = |f: fn(&Verdict) -> bool| cases.iter().filter(|c| f(&c.verdict)).count();
    let failures = count(|v| matches!(v, Verdict::Failure(..)));
    let errors = count(|v| matches!(v, Verdict::Error(_)));
    let skipped = count(|v| matches!(v, Verdict::Skipped(_)));
    let time: f64 = cases.iter().map(|c| c.seconds).sum();
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.6}\">",
        esc(name),
        cases.len()
    );
    out.push_str("    <properties>\n");
    for (k, v) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            esc(k),
            esc(v)
        );
    }
    out.push_str("    </properties>\n");
    for c in cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
            esc(&c.classname),
            esc(&c.name),
            c.seconds
        );
        match &c.verdict {
            Verdict::Pass => out.push_str("/>\n"),
            Verdict::Failure(msg, body) => {
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"parity\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(msg),
                    esc(body)
                );
            }
            Verdict::Error(msg) => {
                let _ = writeln!(
                    out,
                    ">\n      <error type=\"runtime\" message=\"{}\"/>\n    </testcase>",
                    esc(msg)
                );
            }
            Verdict::Skipped(msg) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(msg)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

/// The report as a JUnit XML document.
pub fn render(r: &ValidationReport) -> String {
    let props = vec![
        ("graph", r.graph.clone()),
        ("precision", r.precision.clone()),
        ("atol", format!("{:e}", r.tolerance.atol)),
        ("rtol", format!("{:e}", r.tolerance.rtol)),
        (
            "max_outlier_fraction",
            r.tolerance.max_outlier_fraction.to_string(),
        ),
        ("passed", r.passed.to_string()),
    ];
    let mut suites = vec![(format!("validate {}", r.graph), cases_of(&r.runtimes))];
    if let Some(g) = &r.golden {
        suites.push((format!("golden {}", g.file), cases_of(&g.runtimes)));
    }
    let total = |f: fn(&Verdict) -> bool| {
        suites
            .iter()
            .flat_map(|(_, c)| c)
            .filter(|c| f(&c.verdict))
            .count()
    };
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"flashctl validate\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        total(|_| true),
        total(|v| matches!(v, Verdict::Failure(..))),
        total(|v| matches!(v, Verdict::Error(_))),
        total(|v| matches!(v, Verdict::Skipped(_)))
    );
    for (name, cases) in &suites {
        suite(&mut out, name, &props, cases);
    }
    out.push_str("</testsuites>\n");
    out
}

/// Writes the report atomically (temp + rename).
pub fn write(path: &Path, r: &ValidationReport) -> Result<()> {
    crate::checkpoint::write_atomic(path, render(r).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::GoldenReport;
    use flashctl_validate::{ParityStats, Tolerance};

    fn stats(output: &str, max_abs: f64, passed: bool) -> ParityStats {
        ParityStats {
            output: output.into(),
            elements: 64,
            max_abs,
            mean_abs: max_abs / 4.0,
            max_rel: max_abs * 10.0,
            p99_abs: max_abs / 2.0,
            outlier_fraction: if passed { 0.0 } else { 0.125 },
            min_passing_atol: max_abs,
            min_passing_rtol: 0.0,
            non_finite: 0,
            passed,
        }
    }

    fn runtime(
        name: &str,
        status: &str,
        parity: Vec<ParityStats>,
        reason: Option<&str>,
    ) -> RuntimeReport {
        RuntimeReport {
            runtime: name.into(),
            status: status.into(),
            provider: (status != "unavailable").then(|| "CPU".to_string()),
            reason: reason.map(String::from),
            parity,
            latency_ms: Some([("p50".to_string(), 2.5)].into()),
        }
    }

    #[test]
    fn one_case_per_runtime_and_output_with_failures_errors_and_skips() {
        let report = ValidationReport {
            graph: "out/model.onnx".into(),
            precision: "fp32".into(),
            tolerance: Tolerance::FP32,
            tolerance_overrides: Default::default(),
            runtimes: vec![
                runtime("tract", "pass", vec![stats("image", 1e-6, true)], None),
                runtime("ort-cpu", "fail", vec![stats("image", 3e-3, false)], None),
                runtime("ort-cuda", "unavailable", vec![], Some("library not found")),
                runtime(
                    "candle",
                    "refused",
                    vec![],
                    Some("unsupported op <Foo> & \"bar\""),
                ),
            ],
            golden: Some(GoldenReport {
                file: "goldens/model.safetensors".into(),
                graph_changed: Some(false),
                runtimes: vec![runtime(
                    "tract",
                    "pass",
                    vec![stats("image", 0.0, true)],
                    None,
                )],
            }),
            bisect: vec![],
            passed: false,
        };
        insta::assert_snapshot!(render(&report));
    }
}
