//! `flashctl build` and `flashctl bundle verify`: what the edge team receives.
//!
//! A bundle is a directory:
//! ```text
//! BUNDLE/manifest.json          schema, model/sampler config, signature with value ranges,
//!                               pre/post-processing, sha256 of every file, parity and latency
//!                               per engine, runtime and device it was built for
//! BUNDLE/README.md              for the receiving team
//! BUNDLE/onnx/model.onnx        the exported sampler (+ its manifest.json, reference.safetensors)
//! BUNDLE/engines/TARGET/...     the engine: tract NNEF archive, ORT-optimised model, TensorRT
//!                               engine cache
//! ```
//! Engines come from a cache keyed by (graph sha256, runtime version, device, flags); an entry
//! whose recorded key or content hash disagrees is rebuilt, never used.

use crate::checkpoint::{self, sha256_hex};
use crate::export::{self, Precision};
use crate::validation::{self, BadInput};
use anyhow::{bail, Context, Result};
use flashctl_validate::{HostTensor, ParityStats, Runtime, Tolerance};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const BUNDLE_SCHEMA: u32 = 1;
pub const TARGETS: &[&str] = &["tract", "ort-cpu", "ort-cuda", "ort-tensorrt"];

/// A build target by its name; `tensorrt` (the earlier spelling) is read as `ort-tensorrt`.
pub fn canonical_target(name: &str) -> &str {
    match name {
        "tensorrt" => "ort-tensorrt",
        other => other,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineEntry {
    pub target: String,
    /// files of the engine, relative to the bundle
    pub files: Vec<String>,
    /// the runtime that loads it, with its version
    pub runtime: String,
    pub device: String,
    pub flags: BTreeMap<String, String>,
    pub cache_key: String,
    /// `hit`, `miss`, `stale: ...` at build time
    pub cache: String,
    pub parity: Vec<ParityStats>,
    /// `pass` or `fail`, as validate's runtimes (bundles before 0.1 wrote `parity_passed`)
    #[serde(alias = "parity_passed", deserialize_with = "status_or_bool")]
    pub status: String,
    /// p50 / p90 latency at build, reference batch
    pub latency_ms: BTreeMap<String, f64>,
}

fn status_or_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Status(String),
        Passed(bool),
    }
    Ok(match Either::deserialize(d)? {
        Either::Status(s) => s,
        Either::Passed(p) => pass_fail(p).into(),
    })
}

pub fn pass_fail(passed: bool) -> &'static str {
    if passed {
        "pass"
    } else {
        "fail"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signature {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
    /// the values the graph expects / produces
    pub range: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleManifest {
    pub schema_version: u32,
    pub flashctl_version: String,
    pub graph: String,
    pub graph_sha256: String,
    pub precision: String,
    pub model: serde_json::Value,
    pub sampler: serde_json::Value,
    pub inputs: Vec<Signature>,
    pub outputs: Vec<Signature>,
    pub preprocessing: String,
    pub postprocessing: String,
    pub tolerance: Tolerance,
    pub engines: Vec<EngineEntry>,
    /// sha256 of every file in the bundle but this manifest, by relative path
    pub files: BTreeMap<String, String>,
}

pub struct BuildOptions {
    pub model: PathBuf,
    pub target: String,
    pub out: PathBuf,
    /// Replace an earlier bundle in `out` (only one flashctl wrote).
    pub force: bool,
    pub steps: Option<usize>,
    pub precision: Precision,
    pub cache_dir: PathBuf,
    pub runs: usize,
}

/// The machine, in words (CPU model and core count).
pub fn device_name() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

/// Default engine cache: `$XDG_CACHE_HOME/flashctl/engines` or `~/.cache/flashctl/engines`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("flashctl/engines")
}

/// The runtime name `validate` uses for a build target.
fn runtime_of(target: &str) -> &'static str {
    match target {
        "tract" => "tract",
        "ort-cpu" => "ort-cpu",
        "ort-cuda" => "ort-cuda",
        _ => "ort-tensorrt",
    }
}

fn runtime_version(target: &str) -> Result<String> {
    Ok(match target {
        "tract" => flashctl_validate::engines::TRACT_VERSION.to_string(),
        _ => flashctl_validate::engines::ort_version().map_err(|e| BadInput(e.to_string()))?,
    })
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct CacheKey {
    graph_sha256: String,
    target: String,
    runtime: String,
    device: String,
    flags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: CacheKey,
    /// file name -> sha256
    files: BTreeMap<String, String>,
}

/// An engine's files: (name, bytes).
type EngineFiles = Vec<(String, Vec<u8>)>;

/// Look the engine up in the cache; build (and store) it when absent, stale or corrupt.
/// Returns the engine's files (name, bytes) and what the cache did.
fn cached_engine(
    cache_dir: &Path,
    key: &CacheKey,
    build: impl FnOnce(&Path) -> Result<EngineFiles>,
) -> Result<(EngineFiles, String, String)> {
    let id = sha256_hex(&serde_json::to_vec(key)?);
    let dir = cache_dir.join(&id[..16]);
    let entry_path = dir.join("entry.json");
    let status = match std::fs::read_to_string(&entry_path) {
        Err(_) => "miss".to_string(),
        Ok(text) => match serde_json::from_str::<CacheEntry>(&text) {
            Err(e) => format!("stale: unreadable entry ({e})"),
            Ok(e) if e.key != *key => {
                "stale: entry built for another graph/runtime/device/flags".into()
            }
            Ok(e) => {
                let mut files = vec![];
                let mut bad = None;
                for (name, sha) in &e.files {
                    match std::fs::read(dir.join(name)) {
                        Ok(b) if sha256_hex(&b) == *sha => files.push((name.clone(), b)),
                        Ok(_) => bad = Some(format!("stale: {name} does not match its sha256")),
                        Err(err) => bad = Some(format!("stale: {name}: {err}")),
                    }
                }
                match bad {
                    None if !files.is_empty() => return Ok((files, "hit".into(), id)),
                    None => "stale: empty entry".into(),
                    Some(b) => b,
                }
            }
        },
    };
    // build into a fresh temp dir, then replace the entry
    let tmp = cache_dir.join(format!(".{}.{}.tmp", &id[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let files = build(&tmp)?;
    let mut hashes = BTreeMap::new();
    for (name, bytes) in &files {
        checkpoint::write_atomic(&tmp.join(name), bytes)?;
        hashes.insert(name.clone(), sha256_hex(bytes));
    }
    let entry = CacheEntry {
        key: serde_json::from_value(serde_json::to_value(key)?)?,
        files: hashes,
    };
    checkpoint::write_atomic(&tmp.join("entry.json"), &serde_json::to_vec_pretty(&entry)?)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).with_context(|| format!("storing {}", dir.display()))?;
    Ok((files, status, id))
}

/// Build the engine for `target` from ONNX bytes; `work` is scratch space for runtimes that
/// write files (ORT's optimised model, TensorRT's engine cache).
fn build_engine(
    target: &str,
    onnx: &[u8],
    precision: Precision,
    work: &Path,
) -> Result<EngineFiles> {
    match target {
        "tract" => Ok(vec![(
            "model.nnef.tar".into(),
            flashctl_validate::engines::tract_nnef_from_onnx(onnx)?,
        )]),
        "ort-cpu" | "ort-cuda" | "ort-tensorrt" | "tensorrt" => {
            let rt = flashctl_validate::OrtRuntime::new(runtime_of(target))
                .map_err(|e| BadInput(e.to_string()))?;
            let out = work.join("model.ort.onnx");
            rt.write_optimized(onnx, &out, precision == Precision::Fp16, work)?;
            let mut files = vec![];
            for e in crate::fsx::read_dir(work)?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if e.path().is_file() && !name.starts_with('.') {
                    files.push((name, crate::fsx::read(&e.path())?));
                }
            }
            files.sort();
            Ok(files)
        }
        other => bail!(BadInput(format!(
            "unknown target `{other}` ({})",
            TARGETS.join(", ")
        ))),
    }
}

/// A runtime loaded with a bundle's engine, ready to run.
fn load_engine(
    entry: &EngineEntry,
    bundle: &Path,
    inputs: &[HostTensor],
) -> Result<Box<dyn Runtime>> {
    let main = entry
        .files
        .iter()
        .find(|f| f.ends_with(".nnef.tar") || f.ends_with(".ort.onnx"))
        .with_context(|| format!("engine {} lists no loadable file", entry.target))?;
    let bytes = crate::fsx::read(&bundle.join(main))?;
    let mut rt: Box<dyn Runtime> = match entry.target.as_str() {
        "tract" => Box::new(flashctl_validate::TractRuntime::nnef()),
        t => Box::new(
            flashctl_validate::OrtRuntime::new(runtime_of(t))
                .map_err(|e| BadInput(e.to_string()))?,
        ),
    };
    rt.prepare(&bytes, inputs)?;
    Ok(rt)
}

/// Parity of an engine against the reference outputs, and its p50/p90 latency over `runs`.
fn measure(
    rt: &mut dyn Runtime,
    inputs: &[HostTensor],
    reference: &[HostTensor],
    outputs: &[String],
    tol: Tolerance,
    runs: usize,
) -> Result<(Vec<ParityStats>, BTreeMap<String, f64>)> {
    let got = rt.run(inputs)?;
    let (stats, problem) =
        validation::compare_outputs(outputs, inputs, &got, reference, tol, &BTreeMap::new())?;
    if let Some(p) = problem {
        bail!("engine: {p}");
    }
    let times = rt.time(inputs, 0, runs)?;
    let mut lat = BTreeMap::new();
    if !times.is_empty() {
        lat.insert("p50".into(), flashctl_validate::percentile(&times, 0.5));
        lat.insert("p90".into(), flashctl_validate::percentile(&times, 0.9));
    }
    Ok((stats, lat))
}

type SignatureRanges = (Vec<Signature>, Vec<Signature>, String, String);

fn signature_ranges(m: &export::Manifest) -> Result<SignatureRanges> {
    let model = m
        .model
        .as_ref()
        .context("bundles of text-to-image pipeline graphs are not supported yet")?;
    let d = &model.denoiser;
    let classes = d.num_classes();
    let clip = m
        .sampler
        .as_ref()
        .and_then(|p| p.steps.last().and_then(|s| s.clip));
    let is_image = d.sample_shape().len() == 3;
    let sig = |s: &export::Signature, range: String| Signature {
        name: s.name.clone(),
        dtype: s.dtype.clone(),
        shape: s.shape.clone(),
        range,
    };
    let inputs = m
        .inputs
        .iter()
        .map(|s| {
            let r = match s.name.as_str() {
                "noise" | "x" => "standard normal N(0, 1), float32, drawn by the caller".into(),
                "class_labels" => format!("integers 0..={}", classes.unwrap_or(1) - 1),
                "t" => format!("timesteps 0..={}", model.schedule.num_train_timesteps - 1),
                _ => "unspecified".into(),
            };
            sig(s, r)
        })
        .collect();
    let outputs = m
        .outputs
        .iter()
        .map(|s| {
            let r = match clip {
                Some(c) => format!("[-{c}, {c}] (x0 clipped)"),
                None => "unbounded float32 (data scaled to about [-1, 1])".into(),
            };
            sig(s, r)
        })
        .collect();
    let pre =
        "noise: i.i.d. standard normal float32 of the input shape, any batch size (the graph's \
               batch axis is symbolic); class_labels (class-conditional models): int64"
            .to_string();
    let post = if is_image {
        "image: NCHW float32 in [-1, 1]; to uint8 per pixel: clamp(round((x + 1) * 127.5), 0, 255)"
            .to_string()
    } else {
        "points: float32 coordinates in the training data's scale; no image post-processing".into()
    };
    Ok((inputs, outputs, pre, post))
}

/// `flashctl build`: export, build the target's engine (through the cache), measure parity and
/// latency, write the bundle atomically (a temp dir renamed into place).
/// Latency is the p50 of `runs` timed runs: none would write NaN into a manifest.
fn check_runs(runs: usize) -> Result<()> {
    if runs == 0 {
        bail!(BadInput("--runs 0: latency needs at least 1 run".into()));
    }
    Ok(())
}

pub fn build(o: &BuildOptions) -> Result<BundleManifest> {
    check_runs(o.runs)?;
    if !TARGETS.contains(&o.target.as_str()) {
        bail!(BadInput(format!(
            "unknown target `{}` ({})",
            o.target,
            TARGETS.join(", ")
        )));
    }
    // the new bundle is built beside and swapped in at the end: an earlier one survives a
    // failed build
    let existing = crate::out_dir::Existing::from_flags(o.force, false);
    crate::out_dir::check(&o.out, "--out", existing)?;
    let parent = o
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::fsx::create_dir_all(parent)?;
    let name = o
        .out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = build_into(o, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return result;
    }
    let old = parent.join(format!(".{name}.{}.old", std::process::id()));
    if o.out.exists() {
        crate::fsx::rename(&o.out, &old)?;
    }
    crate::fsx::rename(&tmp, &o.out)?;
    let _ = std::fs::remove_dir_all(&old);
    result
}

fn build_into(o: &BuildOptions, dir: &Path) -> Result<BundleManifest> {
    let graph = dir.join("onnx/model.onnx");
    // the graph in the form its engine's runtime runs best (`export --target`)
    let form = export::GraphForm {
        precision: o.precision,
        target: o.target.parse().map_err(BadInput)?,
        opset: None,
    };
    export::export(&o.model, o.steps, None, form, &graph)?;
    let em: export::Manifest = serde_json::from_str(&crate::fsx::read_to_string(
        &dir.join("onnx/manifest.json"),
    )?)?;
    let onnx = crate::fsx::read(&graph)?;
    let device = device_name();
    let version = runtime_version(&o.target)?;
    let mut flags = BTreeMap::new();
    flags.insert("precision".to_string(), o.precision.name().to_string());
    if o.target != "tract" {
        flags.insert("ort_optimization".into(), "extended".into());
    }
    let key = CacheKey {
        graph_sha256: em.graph_sha256.clone(),
        target: o.target.clone(),
        runtime: version.clone(),
        device: device.clone(),
        flags: flags.clone(),
    };
    std::fs::create_dir_all(&o.cache_dir)
        .with_context(|| format!("creating {}", o.cache_dir.display()))?;
    let (files, cache, key_id) = cached_engine(&o.cache_dir, &key, |work| {
        build_engine(&o.target, &onnx, o.precision, work)
    })?;
    let engine_dir = format!("engines/{}", o.target);
    let mut rel_files = vec![];
    for (name, bytes) in &files {
        let rel = format!("{engine_dir}/{name}");
        checkpoint::write_atomic(&dir.join(&rel), bytes)?;
        rel_files.push(rel);
    }
    let tol = validation::default_tolerance(o.precision.name());
    let mut entry = EngineEntry {
        target: o.target.clone(),
        files: rel_files,
        runtime: version,
        device: device.clone(),
        flags,
        cache_key: key_id,
        cache,
        parity: vec![],
        status: "fail".into(),
        latency_ms: BTreeMap::new(),
    };
    let (inputs, reference, outputs) = reference_io(dir)?;
    let mut rt = load_engine(&entry, dir, &inputs)?;
    let (parity, lat) = measure(rt.as_mut(), &inputs, &reference, &outputs, tol, o.runs)?;
    entry.status = pass_fail(parity.iter().all(|s| s.passed)).into();
    entry.parity = parity;
    entry.latency_ms = lat;
    if entry.status != "pass" {
        bail!(BadInput(format!(
            "the {} engine fails parity against the eager reference (max abs {:.3e}); bundle not written",
            o.target,
            entry.parity.iter().fold(0f64, |m, s| m.max(s.max_abs))
        )));
    }
    let (ins, outs, pre, post) = signature_ranges(&em)?;
    let mut manifest = BundleManifest {
        schema_version: BUNDLE_SCHEMA,
        flashctl_version: env!("CARGO_PKG_VERSION").into(),
        graph: "onnx/model.onnx".into(),
        graph_sha256: em.graph_sha256.clone(),
        precision: o.precision.name().into(),
        model: serde_json::to_value(&em.model)?,
        sampler: serde_json::to_value(&em.sampler)?,
        inputs: ins,
        outputs: outs,
        preprocessing: pre,
        postprocessing: post,
        tolerance: tol,
        engines: vec![entry],
        files: BTreeMap::new(),
    };
    checkpoint::write_atomic(&dir.join("README.md"), readme(&manifest).as_bytes())?;
    manifest.files = hash_files(dir)?;
    checkpoint::write_atomic(
        &dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(manifest)
}

/// Inputs (graph order), reference tensors and output names of the bundle's graph.
fn reference_io(bundle: &Path) -> Result<(Vec<HostTensor>, Vec<HostTensor>, Vec<String>)> {
    let graph = bundle.join("onnx/model.onnx");
    let bytes = std::fs::read(&graph).with_context(|| graph.display().to_string())?;
    let m = flashctl_exporters::decode_model(&bytes).map_err(|e| BadInput(e.to_string()))?;
    let g = m.graph.unwrap();
    let (inputs, reference) =
        validation::reference_for(&bundle.join("onnx/reference.safetensors"), &g)?;
    Ok((
        inputs,
        reference,
        g.output.iter().map(|o| o.name.clone()).collect(),
    ))
}

/// sha256 of every file under `dir` but `manifest.json`, by relative path.
fn hash_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in crate::fsx::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if rel != "manifest.json" {
                out.insert(rel, sha256_hex(&crate::fsx::read(&p)?));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    pub files_checked: usize,
    /// the first file whose hash fails, or that is missing / not listed
    pub tampered: Option<String>,
    pub engines: Vec<EngineEntry>,
    pub passed: bool,
}

/// `flashctl bundle verify`: every file's sha256, then each engine's parity on this machine.
pub fn verify(bundle: &Path, runs: usize) -> Result<VerifyReport> {
    check_runs(runs)?;
    let mpath = bundle.join("manifest.json");
    let text = std::fs::read_to_string(&mpath)
        .map_err(|e| BadInput(format!("{}: {e}", mpath.display())))?;
    let m: BundleManifest = serde_json::from_str(&text).map_err(|e| {
        BadInput(format!(
            "{}: not a flashctl bundle manifest: {e}",
            mpath.display()
        ))
    })?;
    let mut report = VerifyReport {
        bundle: bundle.display().to_string(),
        files_checked: 0,
        tampered: None,
        engines: vec![],
        passed: false,
    };
    let present = hash_files(bundle)?;
    for (rel, sha) in &m.files {
        match present.get(rel) {
            None => {
                report.tampered = Some(format!("{rel}: missing"));
                return Ok(report);
            }
            Some(s) if s != sha => {
                report.tampered = Some(format!(
                    "{rel}: sha256 {} differs from the manifest's {}",
                    &s[..12],
                    &sha[..12]
                ));
                return Ok(report);
            }
            Some(_) => report.files_checked += 1,
        }
    }
    if let Some(extra) = present.keys().find(|k| !m.files.contains_key(*k)) {
        report.tampered = Some(format!("{extra}: not listed in the manifest"));
        return Ok(report);
    }
    let (inputs, reference, outputs) = reference_io(bundle)?;
    let mut all = true;
    for e in &m.engines {
        let mut rt = load_engine(e, bundle, &inputs)?;
        let (parity, lat) = measure(
            rt.as_mut(),
            &inputs,
            &reference,
            &outputs,
            m.tolerance,
            runs,
        )?;
        let mut now = e.clone();
        now.status = pass_fail(parity.iter().all(|s| s.passed)).into();
        now.parity = parity;
        now.latency_ms = lat;
        now.device = device_name();
        all &= now.status == "pass";
        report.engines.push(now);
    }
    report.passed = all;
    Ok(report)
}

fn readme(m: &BundleManifest) -> String {
    let e = &m.engines[0];
    let sig = |v: &[Signature]| {
        v.iter()
            .map(|s| {
                format!(
                    "| `{}` | {} | [{}] | {} |",
                    s.name,
                    s.dtype,
                    s.shape.join(", "),
                    s.range
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let max_abs = e.parity.iter().fold(0f64, |a, s| a.max(s.max_abs));
    let load = match e.target.as_str() {
        "tract" => "```rust\nlet model = tract_nnef::nnef()\n    .model_for_path(\"engines/tract/model.nnef.tar\")?\n    .into_optimized()?\n    .into_runnable()?;\nlet out = model.run(tvec!(noise.into()))?; // plus class_labels for class-conditional models\n```".to_string(),
        _ => "```python\nimport onnxruntime as ort\nsess = ort.InferenceSession(\"engines/".to_string() + &e.target + "/model.ort.onnx\", providers=[\"CPUExecutionProvider\"])\n(image,) = sess.run([\"image\"], {\"noise\": noise})\n```",
    };
    format!(
        "# flashctl bundle\n\nA {steps}-step sampler exported as one graph (`{graph}`, sha256 `{sha}`), {prec}, with a \
         `{target}` engine built for {device} with {runtime}.\n\n## Signature\n\n| name | dtype | shape | values |\n|---|---|---|---|\n{ins}\n{outs}\n\n\
         Pre-processing: {pre}.\n\nPost-processing: {post}.\n\n## Load\n\n{load}\n\n## Checked at build\n\n\
         Parity against the eager reference (`onnx/reference.safetensors`): max abs {max_abs:.3e} \
         (tolerance atol {atol}, rtol {rtol}). Latency at the reference batch: p50 {p50:.3} ms.\n\n\
         Re-check on the receiving machine: `flashctl bundle verify BUNDLE` (every file's sha256 against \
         `manifest.json`, then parity of each engine on that machine; exit 1 names a tampered file).\n",
        steps = m.sampler["steps"].as_array().map(|a| a.len()).unwrap_or(1),
        graph = m.graph,
        sha = &m.graph_sha256[..16],
        prec = m.precision,
        target = e.target,
        device = e.device,
        runtime = e.runtime,
        ins = sig(&m.inputs),
        outs = sig(&m.outputs),
        pre = m.preprocessing,
        post = m.postprocessing,
        atol = validation::number(m.tolerance.atol),
        rtol = validation::number(m.tolerance.rtol),
        p50 = e.latency_ms.get("p50").copied().unwrap_or(f64::NAN),
    )
}
