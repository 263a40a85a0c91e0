//! `flashctl validate`: run an exported graph in each runtime on its reference inputs and compare
//! with the eager outputs stored beside it.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use flashctl_exporters::{check::check_structure, decode_model};
use flashctl_validate::{
    compare, runtime_by_name, HostTensor, ParityStats, Runtime, Tolerance, ValidateError,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct RuntimeReport {
    pub runtime: String,
    /// `pass`, `fail` (parity, or the run failed), `refused` (the runtime could not load the
    /// graph) or `unavailable` (the runtime is not installed).
    pub status: String,
    pub provider: Option<String>,
    pub reason: Option<String>,
    pub parity: Vec<ParityStats>,
    /// Median latency of one run over the reference batch, after a warm-up run.
    pub latency_ms: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Debug, Serialize)]
pub struct ValidationReport {
    pub graph: String,
    /// the export's precision (manifest), which chose the default tolerance
    pub precision: String,
    pub tolerance: Tolerance,
    /// Per-output tolerances (`--atol NAME=A`, `--rtol NAME=R`) where they differ.
    pub tolerance_overrides: std::collections::BTreeMap<String, Tolerance>,
    pub runtimes: Vec<RuntimeReport>,
    /// `--golden DIR`: every runtime that ran, on the golden inputs, against the golden outputs
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenReport>,
    /// `--bisect`: the first diverging node for each failing runtime
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bisect: Vec<crate::bisect::BisectReport>,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct GoldenReport {
    pub file: String,
    /// the graph differs from the one the golden was blessed for (STEM.json's sha256): the
    /// outputs are still compared, but a reviewer should know the export changed
    pub graph_changed: Option<bool>,
    pub runtimes: Vec<RuntimeReport>,
}

/// A runtime by name: `candle` (the eager reference, rebuilt from the export beside `graph`) or
/// one of the validate crate's ONNX runtimes.
pub fn make_runtime(
    name: &str,
    graph: &Path,
) -> std::result::Result<Box<dyn Runtime>, ValidateError> {
    match name {
        "candle" => Ok(Box::new(crate::eager_runtime::EagerRuntime::open(graph)?)),
        other => runtime_by_name(other),
    }
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
    use flashctl_exporters::pb::tensor_proto::DataType;
    for input in &g.input {
        let Some(t) = map.get(&input.name) else {
            continue; // reported as missing by the caller
        };
        let Some((elem_type, dims)) = flashctl_exporters::summary::tensor_signature(input) else {
            continue;
        };
        let want = match DataType::try_from(elem_type) {
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
    check_model_target(&model, t, &graph.display().to_string())
}

/// `model` (named `what` in the error) against `t`'s allow-list; every refusal named.
pub fn check_model_target(
    model: &flashctl_exporters::pb::ModelProto,
    t: &flashctl_exporters::targets::Target,
    what: &str,
) -> Result<()> {
    let problems = flashctl_exporters::targets::check_target(model, t);
    if !problems.is_empty() {
        return Err(BadInput(format!(
            "{what} is not deployable on {} ({}): {}",
            t.name,
            t.source,
            problems.join("; ")
        ))
        .into());
    }
    Ok(())
}

/// What `validate` does beyond running each runtime against the reference.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub tolerance: Tolerance,
    /// per-output tolerances (`--atol NAME=A`, `--rtol NAME=R`)
    pub overrides: BTreeMap<String, Tolerance>,
    /// timed runs per runtime after the parity run
    pub runs: usize,
    /// name the first diverging node for every runtime that failed
    pub bisect: bool,
    /// compare with the stored golden outputs in this directory too
    pub golden: Option<PathBuf>,
}

impl ValidateOptions {
    pub fn new(tolerance: Tolerance) -> Self {
        Self {
            tolerance,
            overrides: BTreeMap::new(),
            runs: 5,
            bisect: false,
            golden: None,
        }
    }
}

/// The precision the export beside `graph` declares (`fp32` when there is no manifest naming it):
/// `validate` takes that precision's tolerance levels.
pub fn graph_precision(graph: &Path) -> String {
    crate::export::manifest_beside(graph)
        .map(|m| m.precision)
        .unwrap_or_else(|_| "fp32".into())
}

/// The default tolerance of a precision: fp32 atol 1e-4; fp16 the `approximate` fp16 level
/// (atol and rtol 1e-2).
pub fn default_tolerance(precision: &str) -> Tolerance {
    match precision {
        "fp16" => Tolerance::level("approximate", "fp16").expect("known level"),
        _ => Tolerance::FP32,
    }
}

pub fn validate(
    graph: &Path,
    reference: Option<&Path>,
    runtimes: &[String],
    tol: Tolerance,
    runs: usize,
) -> Result<ValidationReport> {
    let mut opts = ValidateOptions::new(tol);
    opts.runs = runs;
    validate_with(graph, reference, runtimes, &opts)
}

/// Inputs (in graph order) and every tensor of a reference or golden file, checked against the
/// graph's inputs.
pub fn reference_for(
    path: &Path,
    g: &flashctl_exporters::pb::GraphProto,
) -> Result<(Vec<HostTensor>, Vec<HostTensor>)> {
    let reference =
        load_reference(path).with_context(|| format!("reference {}", path.display()))?;
    check_reference_inputs(path, &reference, g)?;
    let tensors = host_tensors(&reference)?;
    let mut inputs = vec![];
    for i in &g.input {
        match tensors.iter().find(|t| t.name == i.name) {
            Some(t) => inputs.push(t.clone()),
            None => {
                return Err(BadInput(format!(
                    "{}: no value for graph input `{}`",
                    path.display(),
                    i.name
                ))
                .into())
            }
        }
    }
    Ok((inputs, tensors))
}

/// The golden file of `graph` in `dir`: `STEM.safetensors` (inputs and outputs).
pub fn golden_path(dir: &Path, graph: &Path) -> PathBuf {
    let stem = graph.file_stem().unwrap_or_default().to_string_lossy();
    dir.join(format!("{stem}.safetensors"))
}

/// `validate --golden DIR --update-golden`: store the reference beside a provenance note
/// (`STEM.json`: graph sha256, flashctl version); the reference is the eager output.
pub fn update_golden(graph: &Path, reference: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(graph).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let ref_path = reference_path(graph, reference);
    let tensors = load_reference(&ref_path)?;
    let out = golden_path(dir, graph);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::checkpoint::save_tensors(&out, &tensors)?;
    let note = serde_json::json!({
        "graph": graph.file_name().map(|f| f.to_string_lossy().to_string()),
        "graph_sha256": crate::checkpoint::sha256_hex(&bytes),
        "from_reference": ref_path.file_name().map(|f| f.to_string_lossy().to_string()),
        "flashctl_version": env!("CARGO_PKG_VERSION"),
    });
    crate::checkpoint::write_atomic(
        &out.with_extension("json"),
        serde_json::to_string_pretty(&note)?.as_bytes(),
    )?;
    Ok(out)
}

fn reference_path(graph: &Path, reference: Option<&Path>) -> PathBuf {
    match reference {
        Some(p) => p.to_path_buf(),
        None => graph
            .parent()
            .unwrap_or(Path::new("."))
            .join(crate::export::REFERENCE_FILE),
    }
}

/// Run every runtime on the reference inputs (and the golden's, with `--golden`) and compare.
pub fn validate_with(
    graph: &Path,
    reference: Option<&Path>,
    runtimes: &[String],
    opts: &ValidateOptions,
) -> Result<ValidationReport> {
    let (tol, overrides) = (opts.tolerance, &opts.overrides);
    let bytes = std::fs::read(graph).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let model = decode_model(&bytes).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    check_structure(&model).map_err(|e| BadInput(format!("{}: {e}", graph.display())))?;
    let g = model.graph.as_ref().unwrap();
    let ref_path = reference_path(graph, reference);
    let (inputs, tensors) = reference_for(&ref_path, g)?;
    for name in overrides.keys() {
        if !g.output.iter().any(|o| &o.name == name) {
            return Err(BadInput(format!(
                "tolerance given for `{name}`, which is not an output of {}",
                graph.display()
            ))
            .into());
        }
    }
    let golden = match &opts.golden {
        Some(dir) => {
            let path = golden_path(dir, graph);
            if !path.exists() {
                return Err(BadInput(format!(
                    "no golden {} for {} (create it with --update-golden)",
                    path.display(),
                    graph.display()
                ))
                .into());
            }
            Some((path.clone(), reference_for(&path, g)?))
        }
        None => None,
    };
    let run = |inputs: &[HostTensor], expected: &[HostTensor], rt: &str, runs| {
        run_one(
            rt, graph, &bytes, inputs, expected, &g.output, tol, overrides, runs,
        )
    };
    let mut reports = vec![];
    for rt_name in runtimes {
        reports.push(run(&inputs, &tensors, rt_name, opts.runs)?);
    }
    let golden = match golden {
        Some((path, (g_inputs, g_tensors))) => {
            let mut runtimes = vec![];
            for r in reports.iter().filter(|r| r.status != "unavailable") {
                runtimes.push(run(&g_inputs, &g_tensors, &r.runtime, 0)?);
            }
            let blessed = std::fs::read_to_string(path.with_extension("json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["graph_sha256"].as_str().map(String::from));
            Some(GoldenReport {
                file: path.display().to_string(),
                graph_changed: blessed.map(|b| b != crate::checkpoint::sha256_hex(&bytes)),
                runtimes,
            })
        }
        None => None,
    };
    let mut bisect = vec![];
    if opts.bisect {
        for r in reports.iter().filter(|r| r.status == "fail") {
            bisect.push(crate::bisect::bisect(
                graph, &bytes, &inputs, &r.runtime, tol,
            )?);
        }
    }
    let passed = reports.iter().all(|r| r.status == "pass")
        && golden
            .as_ref()
            .is_none_or(|g| g.runtimes.iter().all(|r| r.status == "pass"));
    Ok(ValidationReport {
        graph: graph.display().to_string(),
        precision: graph_precision(graph),
        tolerance: tol,
        tolerance_overrides: overrides.clone(),
        runtimes: reports,
        golden,
        bisect,
        passed,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    rt_name: &str,
    graph: &Path,
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
        parity: vec![],
        latency_ms: None,
    };
    let mut rt = match make_runtime(rt_name, graph) {
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
    // a runtime that cannot load the graph (IR version, unsupported op) is bad input for this
    // gate, not a numerical result: status `refused`, and the command exits 2
    if let Err(e) = rt.prepare(bytes, inputs) {
        report.status = "refused".into();
        report.reason = Some(one_line(&e.to_string()));
        return Ok(report);
    }
    let got = match rt.run(inputs) {
        Ok(o) => o,
        Err(e) => {
            report.reason = Some(e.to_string());
            return Ok(report);
        }
    };
    // the parity run above was the warm-up
    let times = rt.time(inputs, 0, runs).unwrap_or_default();
    report.latency_ms = (!times.is_empty()).then(|| {
        [(
            "p50".to_string(),
            flashctl_validate::percentile(&times, 0.5),
        )]
        .into()
    });
    let names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let (stats, problem) = compare_outputs(&names, inputs, &got, reference, tol, overrides)?;
    let ok = problem.is_none() && stats.iter().all(|s| s.passed);
    report.parity = stats;
    report.reason = problem;
    report.status = if ok { "pass".into() } else { "fail".into() };
    Ok(report)
}

/// The runtimes this machine has, for a validate that names none: tract (built in) always, ONNX
/// Runtime CPU when its library is found. A runtime named explicitly must load (exit 2 if not).
pub fn installed_runtimes() -> Vec<String> {
    let mut v = vec!["tract".to_string()];
    if flashctl_validate::find_ort_library().is_ok() {
        v.push("ort-cpu".into());
    }
    v
}

/// What an absent ONNX Runtime means, for reports that list it instead of running it.
pub const ORT_NOT_INSTALLED: &str =
    "ort-cpu: not installed (scripts/setup.sh or `pip install onnxruntime==1.31.1` + ORT_DYLIB_PATH)";

/// A tolerance as a person writes it: 0, 1e-4, 0.01.
pub fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        format!("{v}")
    }
}

/// A runtime's message on one line: native libraries report multi-line errors (stack frames,
/// C++ signatures) that would break a CI log's one-line error.
pub fn one_line(msg: &str) -> String {
    let joined = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 400;
    match joined.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &joined[..i]),
        None => joined,
    }
}

/// Each named output of a run against the reference (per-output tolerance where overridden).
/// A missing or wrongly shaped output is returned as the problem (a failure); a reference that
/// lacks an output is bad input, and so is a comparison that would check nothing: a graph
/// without outputs, or a reference tensor that is neither an input fed to the graph nor one of
/// its outputs (a gate must never pass vacuously).
pub fn compare_outputs(
    outputs: &[String],
    inputs: &[HostTensor],
    got: &[HostTensor],
    reference: &[HostTensor],
    tol: Tolerance,
    overrides: &BTreeMap<String, Tolerance>,
) -> Result<(Vec<ParityStats>, Option<String>)> {
    if outputs.is_empty() {
        return Err(BadInput("the graph has no outputs: nothing to compare".into()).into());
    }
    for r in reference {
        if !outputs.contains(&r.name) && !inputs.iter().any(|i| i.name == r.name) {
            return Err(BadInput(format!(
                "reference tensor `{}` is not an output of the graph (outputs: {})",
                r.name,
                outputs.join(", ")
            ))
            .into());
        }
    }
    let (mut stats, mut problem) = (vec![], None);
    for name in outputs {
        let expected = reference.iter().find(|t| &t.name == name);
        let actual = got.iter().find(|t| &t.name == name);
        match (actual, expected) {
            (Some(a), Some(e)) if a.shape == e.shape => {
                let t = overrides.get(name).copied().unwrap_or(tol);
                stats.push(compare(name, &a.values_f64(), &e.values_f64(), t));
            }
            (Some(a), Some(e)) => {
                problem = Some(format!(
                    "output `{name}` shape {:?} vs reference {:?}",
                    a.shape, e.shape
                ));
            }
            (None, _) => problem = Some(format!("runtime produced no `{name}`")),
            (_, None) => return Err(BadInput(format!("reference has no output `{name}`")).into()),
        }
    }
    Ok((stats, problem))
}

pub fn print_table(r: &ValidationReport) {
    let tol = |t: &Tolerance| {
        format!(
            "atol {}, rtol {}, outliers <= {}",
            number(t.atol),
            number(t.rtol),
            number(t.max_outlier_fraction)
        )
    };
    let overrides: Vec<String> = r
        .tolerance_overrides
        .iter()
        .map(|(name, t)| format!("; `{name}`: {}", tol(t)))
        .collect();
    println!(
        "validate {}  ({}; tolerance {}{})",
        r.graph,
        r.precision,
        tol(&r.tolerance),
        overrides.concat()
    );
    print_rows(&r.runtimes);
    if let Some(g) = &r.golden {
        let note = match g.graph_changed {
            Some(true) => " (graph changed since the golden was blessed; outputs compared)",
            Some(false) => " (same graph as blessed)",
            None => " (no STEM.json: graph provenance unknown)",
        };
        println!("golden {}{note}", g.file);
        print_rows(&g.runtimes);
    }
    for b in &r.bisect {
        match &b.first_divergence {
            Some(d) => println!(
                "bisect {}: first diverging node `{}` ({}, node #{}) output `{}`{} after {} matching intermediates",
                b.runtime,
                d.node,
                d.op_type,
                d.node_index,
                d.output,
                d.stats
                    .as_ref()
                    .map(|s| format!(": max abs {:.3e}, max rel {:.3e},", s.max_abs, s.max_rel))
                    .unwrap_or_default(),
                b.compared
            ),
            None => println!("bisect {}: no single diverging node", b.runtime),
        }
        if let Some(n) = &b.note {
            println!("    {n}");
        }
    }
    let unavailable: Vec<&str> = r
        .runtimes
        .iter()
        .filter(|x| x.status == "unavailable")
        .map(|x| x.runtime.as_str())
        .collect();
    let ran_passed = r
        .runtimes
        .iter()
        .filter(|x| x.status != "unavailable")
        .all(|x| x.status == "pass");
    match (r.passed, unavailable.is_empty()) {
        (true, true) => println!("result: PASS"),
        (true, false) => println!(
            "result: PASS ({} unavailable, allowed by --allow-missing)",
            unavailable.join(", ")
        ),
        (false, true) => println!("result: FAIL"),
        // nothing failed that ran: the verdict is that the run is incomplete, not a failure
        (false, false) if ran_passed => println!(
            "result: INCOMPLETE ({} not installed; everything that ran passed)",
            unavailable.join(", ")
        ),
        (false, false) => println!(
            "result: FAIL (and {} not installed)",
            unavailable.join(", ")
        ),
    }
}

fn print_rows(runtimes: &[RuntimeReport]) {
    println!(
        "{:<14} {:<12} {:>12} {:>12} {:>12} {:>12}",
        "runtime", "status", "max abs", "max rel", "p99 abs", "latency ms"
    );
    for rt in runtimes {
        let (ma, mr, p99) = rt.parity.iter().fold((0f64, 0f64, 0f64), |acc, s| {
            (
                acc.0.max(s.max_abs),
                acc.1.max(s.max_rel),
                acc.2.max(s.p99_abs),
            )
        });
        let lat = rt
            .latency_ms
            .as_ref()
            .and_then(|l| l.get("p50"))
            .map(|l| format!("{l:.3}"))
            .unwrap_or_else(|| "-".into());
        if rt.parity.is_empty() {
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
        for o in rt.parity.iter().filter(|o| !o.passed) {
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
}
