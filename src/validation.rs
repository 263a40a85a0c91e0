//! `flashctl validate`: run an exported graph in each runtime on its reference inputs and compare
//! with the eager outputs stored beside it.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_exporters::{check::check_structure, decode_model};
use flashctl_validate::{
    compare, runtime_by_name, HostTensor, ParityStats, Tolerance, ValidateError,
};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct RuntimeReport {
    pub runtime: String,
    /// `pass`, `fail` (parity or the runtime refused the graph) or `unavailable`.
    pub status: String,
    pub provider: Option<String>,
    pub reason: Option<String>,
    pub outputs: Vec<ParityStats>,
    /// Median latency of one run over the reference batch, after a warm-up run.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ValidationReport {
    pub graph: String,
    pub tolerance: Tolerance,
    /// Per-output tolerances (`--atol NAME=A`, `--rtol NAME=R`) where they differ.
    pub tolerance_overrides: std::collections::BTreeMap<String, Tolerance>,
    pub runtimes: Vec<RuntimeReport>,
    pub passed: bool,
}

/// A user error (bad file, bad runtime name): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Read `reference.safetensors` (every float finite) as candle tensors by name.
pub fn load_reference(path: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(crate::checkpoint::load_tensors(path, &Device::Cpu).map_err(|e| BadInput(e.to_string()))?)
}

/// Reference tensors as host tensors (sorted by name): integers as int64, floats as float32.
pub fn host_tensors(map: &HashMap<String, Tensor>) -> Result<Vec<HostTensor>> {
    let mut out = vec![];
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    for name in names {
        let t = &map[name];
        let shape = t.dims().to_vec();
        out.push(match t.dtype() {
            DType::I64 | DType::U32 | DType::U8 => HostTensor::i64(
                name,
                shape,
                t.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?,
            ),
            _ => HostTensor::f32(
                name,
                shape,
                t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            ),
        });
    }
    Ok(out)
}

/// Global and per-output (atol, rtol) from `--atol A|NAME=A` and `--rtol R|NAME=R` flags.
#[allow(clippy::type_complexity)]
pub fn parse_tolerance_flags(
    atol: &[String],
    rtol: &[String],
) -> std::result::Result<
    (
        (Option<f64>, Option<f64>),
        std::collections::BTreeMap<String, (Option<f64>, Option<f64>)>,
    ),
    String,
> {
    let mut global = (None, None);
    let mut per = std::collections::BTreeMap::new();
    for (flag, values, which) in [("atol", atol, 0), ("rtol", rtol, 1)] {
        for v in values {
            let (name, num) = match v.split_once('=') {
                Some((n, x)) => (Some(n.to_string()), x),
                None => (None, v.as_str()),
            };
            let x: f64 = num
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    format!("--{flag} {v}: expected a non-negative number or NAME=number")
                })?;
            let slot: &mut (Option<f64>, Option<f64>) = match name {
                None => &mut global,
                Some(n) => per.entry(n).or_insert((None, None)),
            };
            if which == 0 {
                slot.0 = Some(x);
            } else {
                slot.1 = Some(x);
            }
        }
    }
    Ok((global, per))
}

/// Every graph input's value in the reference has the graph's dtype, rank and known dimensions:
/// a wrong input is bad input (exit 2) named before any runtime runs, never a parity failure.
fn check_reference_inputs(
    ref_path: &Path,
    map: &HashMap<String, Tensor>,
    g: &flashctl_exporters::pb::GraphProto,
) -> Result<()> {
    use flashctl_exporters::pb::{tensor_proto::DataType, tensor_shape_proto::dimension::Value};
    for input in &g.input {
        let Some(t) = map.get(&input.name) else {
            continue; // reported as missing by the caller
        };
        let Some(flashctl_exporters::pb::type_proto::Value::TensorType(tt)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let want = match DataType::try_from(tt.elem_type) {
            Ok(DataType::Float) => Some(DType::F32),
            Ok(DataType::Int64) => Some(DType::I64),
            Ok(DataType::Float16) => Some(DType::F16),
            _ => None,
        };
        if want.is_some_and(|w| w != t.dtype()) {
            return Err(BadInput(format!(
                "{}: input `{}` is {:?}, the graph takes {:?}",
                ref_path.display(),
                input.name,
                t.dtype(),
                want.unwrap()
            ))
            .into());
        }
        let dims: Vec<Option<usize>> = tt
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(n)) if n > 0 => Some(n as usize),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fits = dims.len() == t.rank()
            && dims
                .iter()
                .zip(t.dims())
                .all(|(want, got)| want.is_none_or(|w| w == *got));
        if !fits {
            let shown: Vec<String> = dims
                .iter()
                .map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "?".into()))
                .collect();
            return Err(BadInput(format!(
                "{}: input `{}` has shape {:?}, the graph takes [{}]",
                ref_path.display(),
                input.name,
                t.dims(),
                shown.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// `--target`: the graph's ops and opset against the target's allow-list; every refusal named.
pub fn check_target(graph: &Path, target: &str) -> Result<()> {
    let t = flashctl_exporters::targets::target_by_name(target).map_err(BadInput)?;
    let bytes = std::fs::read(graph).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let model = decode_model(&bytes).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let problems = flashctl_exporters::targets::check_target(&model, t);
    if !problems.is_empty() {
        return Err(BadInput(format!(
            "{} is not deployable on {} ({}): {}",
            graph.display(),
            t.name,
            t.source,
            problems.join("; ")
        ))
        .into());
    }
    Ok(())
}

pub fn validate(
    graph: &Path,
    reference: Option<&Path>,
    runtimes: &[String],
    tol: Tolerance,
    runs: usize,
) -> Result<ValidationReport> {
    validate_with(graph, reference, runtimes, tol, &Default::default(), runs)
}

/// `validate` with per-output tolerance overrides; naming an output the graph lacks is an error.
pub fn validate_with(
    graph: &Path,
    reference: Option<&Path>,
    runtimes: &[String],
    tol: Tolerance,
    overrides: &std::collections::BTreeMap<String, Tolerance>,
    runs: usize,
) -> Result<ValidationReport> {
    let bytes = std::fs::read(graph).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let model = decode_model(&bytes).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    check_structure(&model).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let g = model.graph.as_ref().unwrap();
    let ref_path = match reference {
        Some(p) => p.to_path_buf(),
        None => graph
            .parent()
            .unwrap_or(Path::new("."))
            .join(crate::export::REFERENCE_FILE),
    };
    let reference =
        load_reference(&ref_path).with_context(|| format!("reference {}", ref_path.display()))?;
    check_reference_inputs(&ref_path, &reference, g)?;
    let tensors = host_tensors(&reference)?;
    let input_names: Vec<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    let inputs: Vec<HostTensor> = tensors
        .iter()
        .filter(|t| input_names.contains(&t.name.as_str()))
        .cloned()
        .collect();
    for name in &input_names {
        if !inputs.iter().any(|t| t.name == *name) {
            return Err(BadInput(format!(
                "{}: no value for graph input `{name}`",
                ref_path.display()
            ))
            .into());
        }
    }
    for name in overrides.keys() {
        if !g.output.iter().any(|o| &o.name == name) {
            return Err(BadInput(format!(
                "tolerance given for `{name}`, which is not an output of {}",
                graph.display()
            ))
            .into());
        }
    }
    let mut reports = vec![];
    for rt_name in runtimes {
        reports.push(run_one(
            rt_name, &bytes, &inputs, &tensors, &g.output, tol, overrides, runs,
        )?);
    }
    let passed = reports.iter().all(|r| r.status == "pass");
    Ok(ValidationReport {
        graph: graph.display().to_string(),
        tolerance: tol,
        tolerance_overrides: overrides.clone(),
        runtimes: reports,
        passed,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    rt_name: &str,
    bytes: &[u8],
    inputs: &[HostTensor],
    reference: &[HostTensor],
    outputs: &[flashctl_exporters::pb::ValueInfoProto],
    tol: Tolerance,
    overrides: &std::collections::BTreeMap<String, Tolerance>,
    runs: usize,
) -> Result<RuntimeReport> {
    let mut report = RuntimeReport {
        runtime: rt_name.into(),
        status: "fail".into(),
        provider: None,
        reason: None,
        outputs: vec![],
        latency_ms: None,
    };
    let mut rt = match runtime_by_name(rt_name) {
        Ok(rt) => rt,
        Err(ValidateError::Unavailable { reason, .. }) => {
            report.status = "unavailable".into();
            report.reason = Some(reason);
            return Ok(report);
        }
        Err(e @ ValidateError::BadInput(_)) => return Err(BadInput(e.to_string()).into()),
        Err(e) => {
            report.reason = Some(e.to_string());
            return Ok(report);
        }
    };
    report.provider = Some(rt.provider());
    let result = rt.prepare(bytes, inputs).and_then(|_| rt.run(inputs));
    let got = match result {
        Ok(o) => o,
        Err(e) => {
            report.reason = Some(e.to_string());
            return Ok(report);
        }
    };
    let mut times = vec![];
    for _ in 0..runs {
        let t0 = std::time::Instant::now();
        rt.run(inputs).ok();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    report.latency_ms = times.get(times.len() / 2).copied();
    let mut ok = true;
    for out in outputs {
        let expected = reference.iter().find(|t| t.name == out.name);
        let actual = got.iter().find(|t| t.name == out.name);
        match (actual, expected) {
            (Some(a), Some(e)) if a.shape == e.shape => {
                let t = overrides.get(&out.name).copied().unwrap_or(tol);
                let s = compare(&out.name, &a.values_f64(), &e.values_f64(), t);
                ok &= s.passed;
                report.outputs.push(s);
            }
            (Some(a), Some(e)) => {
                ok = false;
                report.reason = Some(format!(
                    "output `{}` shape {:?} vs reference {:?}",
                    out.name, a.shape, e.shape
                ));
            }
            (None, _) => {
                ok = false;
                report.reason = Some(format!("runtime produced no `{}`", out.name));
            }
            (_, None) => {
                return Err(BadInput(format!("reference has no output `{}`", out.name)).into())
            }
        }
    }
    report.status = if ok { "pass".into() } else { "fail".into() };
    Ok(report)
}

pub fn print_table(r: &ValidationReport) {
    println!(
        "validate {}  (tolerance atol {:.0e}, rtol {:.0e}, outliers <= {})",
        r.graph, r.tolerance.atol, r.tolerance.rtol, r.tolerance.max_outlier_fraction
    );
    println!(
        "{:<14} {:<12} {:>12} {:>12} {:>12} {:>12}",
        "runtime", "status", "max abs", "max rel", "p99 abs", "latency ms"
    );
    for rt in &r.runtimes {
        let (ma, mr, p99) = rt.outputs.iter().fold((0f64, 0f64, 0f64), |acc, s| {
            (
                acc.0.max(s.max_abs),
                acc.1.max(s.max_rel),
                acc.2.max(s.p99_abs),
            )
        });
        let lat = rt
            .latency_ms
            .map(|l| format!("{l:.3}"))
            .unwrap_or_else(|| "-".into());
        if rt.outputs.is_empty() {
            println!(
                "{:<14} {:<12} {:>12} {:>12} {:>12} {:>12}",
                rt.runtime, rt.status, "-", "-", "-", lat
            );
        } else {
            println!(
                "{:<14} {:<12} {:>12.3e} {:>12.3e} {:>12.3e} {:>12}",
                rt.runtime, rt.status, ma, mr, p99, lat
            );
        }
        if let Some(reason) = &rt.reason {
            println!("    {}: {reason}", rt.runtime);
        }
        for o in rt.outputs.iter().filter(|o| !o.passed) {
            println!(
                "    {}: `{}` would pass with atol >= {:.3e} or rtol >= {:.3e} ({:.2}% outliers)",
                rt.runtime,
                o.output,
                o.min_passing_atol,
                o.min_passing_rtol,
                100.0 * o.outlier_fraction
            );
        }
    }
    let unavailable: Vec<&str> = r
        .runtimes
        .iter()
        .filter(|x| x.status == "unavailable")
        .map(|x| x.runtime.as_str())
        .collect();
    match (r.passed, unavailable.is_empty()) {
        (true, true) => println!("result: PASS"),
        (true, false) => println!(
            "result: PASS ({} unavailable, allowed by --allow-missing)",
            unavailable.join(", ")
        ),
        (false, true) => println!("result: FAIL"),
        (false, false) => println!("result: FAIL ({} unavailable)", unavailable.join(", ")),
    }
}
