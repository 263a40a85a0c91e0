//! `flashctl demo`: the mission on built-in data, CPU, tract (ONNX Runtime too when installed):
//! a teacher (trained, or reused from the cache), an Imagine Flash 3-step student and a KDM
//! one-step generator distilled from it, each exported as one graph and validated, a tract
//! bundle built and verified, each student benchmarked against the teacher's DDIM-50 loop and
//! scored against it, then one summary table, `summary.json` and a picture.
//!
//! The stages run through the same parsers and functions as the commands (`cli::parse_from`),
//! so the demo shows what a user would get typing them.

use crate::cli::{self, Command, DemoArgs};
use crate::train::{self, Preset};
use crate::validation::{self, ValidationReport};
use crate::{bench, bundle, data, eval, export, fsx, out_dir};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use flashctl_validate::Tolerance;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The teacher's DDIM steps the students are compared with (quality and speed).
const TEACHER_STEPS: usize = 50;
const STUDENT_STEPS: usize = 3;

#[derive(Debug, Serialize)]
pub struct Stage {
    pub stage: String,
    /// `pass` or `fail`
    pub status: String,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Quality {
    /// `swd` (2-D data) or `fd` (Fashion-MNIST); lower is better
    pub metric: String,
    pub student: f64,
    pub teacher: f64,
    /// student / teacher DDIM-50 (1.0: as good as the teacher)
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Speed {
    pub batch: usize,
    pub student_p50_ms: f64,
    pub teacher_p50_ms: f64,
    /// teacher DDIM-50 step by step / the student's one graph, same runtime and batch
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct StudentSummary {
    pub name: String,
    pub method: String,
    pub steps: usize,
    pub model: String,
    pub graph: String,
    pub nodes: usize,
    /// runtime -> `pass` / `fail` / `refused` / `not installed`
    pub parity: Vec<(String, String)>,
    pub quality: Option<Quality>,
    pub speed: Vec<Speed>,
}

#[derive(Debug, Serialize)]
pub struct BundleSummary {
    pub path: String,
    pub target: String,
    /// the engine's parity at build time
    pub status: String,
    /// `bundle verify`: hashes and parity again
    pub verify: String,
}

#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub dataset: String,
    pub teacher: String,
    pub teacher_cached: bool,
    pub stages: Vec<Stage>,
    pub students: Vec<StudentSummary>,
    pub bundle: Option<BundleSummary>,
    pub png: String,
    pub seconds: f64,
    pub passed: bool,
}

/// Records each stage's time and verdict as it finishes.
struct Stages {
    list: Vec<Stage>,
    t: Instant,
}

impl Stages {
    fn done(&mut self, stage: &str, passed: bool, detail: String) {
        let status = if passed { "pass" } else { "fail" };
        println!("demo: {stage} {status}: {detail}");
        self.list.push(Stage {
            stage: stage.into(),
            status: status.into(),
            seconds: self.t.elapsed().as_secs_f64(),
            detail,
        });
        self.t = Instant::now();
    }
}

/// One stage as its command line: parsed exactly as `flashctl ARGS` would be.
fn command(args: &[&str]) -> Result<Command> {
    cli::parse_from(std::iter::once("flashctl").chain(args.iter().copied()))
        .map(|c| c.command)
        .map_err(|e| anyhow::anyhow!("demo stage `flashctl {}`: {e}", args.join(" ")))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

/// The cached teacher for these settings, trained into the cache when it is not there (written
/// beside and renamed, so an interrupted run never leaves a half teacher to reuse).
fn cached_teacher(args: &DemoArgs, ds: &data::Dataset, st: &mut Stages) -> Result<(PathBuf, bool)> {
    let (denoiser, mut opts) = train::preset_for(ds, Preset::Small);
    if let Some(i) = args.iters {
        opts.iters = i;
    }
    opts.seed = args.seed;
    let dir = args.cache.join(format!(
        "teacher-{}-small-iters{}-seed{}-v{}",
        ds.name(),
        opts.iters,
        opts.seed,
        env!("CARGO_PKG_VERSION")
    ));
    if dir.join("config.json").is_file() && crate::checkpoint::load(&dir, &Device::Cpu).is_ok() {
        st.done("teacher", true, format!("reused {}", dir.display()));
        return Ok((dir, true));
    }
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    fsx::create_dir_all(&args.cache)?;
    let iters = opts.iters;
    let r = train::train_teacher(
        ds,
        denoiser,
        train::default_schedule(ds),
        opts,
        &partial,
        false,
        true,
        &Device::Cpu,
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} to {}", partial.display(), dir.display()))?;
    st.done(
        "teacher",
        true,
        format!(
            "trained {iters} iters, loss {:.4} -> {:.4} -> {}",
            r.first_loss,
            r.final_loss,
            dir.display()
        ),
    );
    Ok((dir, false))
}

fn parity_of(v: &ValidationReport, installed: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .runtimes
        .iter()
        .map(|r| (r.runtime.clone(), r.status.clone()))
        .collect();
    if !installed.iter().any(|r| r == "ort-cpu") {
        out.push(("ort-cpu".into(), "not installed".into()));
    }
    out
}

/// Parity counts as passed when every runtime that is here passed and tract (the embedded
/// default) is among them; an absent ONNX Runtime is listed, not failed.
fn parity_passed(p: &[(String, String)]) -> bool {
    p.iter().any(|(r, s)| r == "tract" && s == "pass")
        && p.iter().all(|(_, s)| s == "pass" || s == "not installed")
}

fn primary_metric(m: &std::collections::BTreeMap<String, f64>) -> Option<(&'static str, f64)> {
    ["swd", "fd"]
        .into_iter()
        .find_map(|k| m.get(k).map(|v| (k, *v)))
}

pub fn run(args: &DemoArgs) -> Result<bool> {
    let t_all = Instant::now();
    let ds = data::open(&args.dataset, args.data_dir.as_deref(), None)?;
    let is_2d = ds.sample_shape().len() == 1;
    // the demo's own folder: an earlier demo's output is replaced, anything else refused
    out_dir::prepare(&args.out, "--out", out_dir::Existing::Replace)?;
    // marks the folder as the demo's from the start, so an interrupted demo is replaced too
    let summary_path = args.out.join("summary.json");
    fsx::create_dir_all(&args.out)?;
    crate::checkpoint::write_atomic(&summary_path, b"{\"running\": true}\n")
        .with_context(|| format!("writing {}", summary_path.display()))?;
    let mut st = Stages {
        list: vec![],
        t: Instant::now(),
    };
    let (teacher, teacher_cached) = cached_teacher(args, &ds, &mut st)?;
    let t = path_str(&teacher).to_string();
    let out = |rel: &str| args.out.join(rel);
    let student_iters = args.student_iters.map(|i| i.to_string());

    // 1. Imagine Flash, 3 steps
    let if_dir = out("students/imagine-flash-3");
    let mut a = vec![
        "distill",
        "--method",
        "imagine-flash",
        "--teacher",
        &t,
        "--steps",
        "3",
        "--seed",
        "5",
        "--out",
        path_str(&if_dir),
    ];
    if let Some(i) = &student_iters {
        a.extend(["--iters", i]);
    }
    let Command::Distill(d) = command(&a)? else {
        unreachable!()
    };
    let r = crate::distill::command::run(&d)?;
    st.done(
        "imagine-flash",
        true,
        format!(
            "{STUDENT_STEPS}-step student, {} iters, loss {:.5} -> {:.5}",
            r.iters_done, r.first_loss, r.final_loss
        ),
    );

    // 2. the teacher's pairs, then KDM
    let pairs_dir = out("pairs");
    let count = args
        .pairs
        .unwrap_or(if is_2d { 20000 } else { 2048 })
        .to_string();
    let steps = TEACHER_STEPS.to_string();
    let Command::Pairs(cli::PairsCommand::Generate(p)) = command(&[
        "pairs",
        "generate",
        "--teacher",
        &t,
        "--count",
        &count,
        "--steps",
        &steps,
        "--out",
        path_str(&pairs_dir),
    ])?
    else {
        unreachable!()
    };
    let pr = crate::pairs::run(&p)?;
    st.done(
        "pairs",
        true,
        format!(
            "{} teacher DDIM-{TEACHER_STEPS} pairs in {:.1} s",
            pr.pairs, pr.seconds
        ),
    );
    let kdm_dir = out("students/kdm-1");
    let mut a = vec![
        "distill",
        "--method",
        "kdm",
        "--pairs",
        path_str(&pairs_dir),
        "--seed",
        "5",
        "--out",
        path_str(&kdm_dir),
    ];
    if let Some(i) = &student_iters {
        a.extend(["--iters", i]);
    }
    let Command::Distill(d) = command(&a)? else {
        unreachable!()
    };
    let r = crate::distill::command::run(&d)?;
    st.done(
        "kdm",
        true,
        format!(
            "one-step generator, {} iters, loss {:.5} -> {:.5}",
            r.iters_done, r.first_loss, r.final_loss
        ),
    );

    // 3. per student: one graph, parity, speed, quality
    let installed = validation::installed_runtimes();
    let eval_count = args.count.unwrap_or(if is_2d { 20000 } else { 1000 });
    let mut students = vec![];
    let batches: Vec<usize> = if is_2d { vec![1, 256] } else { vec![1, 8] };
    for (name, method, steps, dir) in [
        ("imagine-flash-3", "imagine-flash", STUDENT_STEPS, &if_dir),
        ("kdm-1", "kdm", 1, &kdm_dir),
    ] {
        let graph = out(&format!("exports/{name}/model.onnx"));
        let ex = export::export(dir, None, None, export::Precision::Fp32, &graph)?;
        let v = validation::validate(&graph, None, &installed, Tolerance::FP32, 5)?;
        let parity = parity_of(&v, &installed);
        let ok = parity_passed(&parity);
        st.done(
            &format!("export+validate {name}"),
            ok,
            format!(
                "{} nodes; {}",
                ex.node_count,
                parity
                    .iter()
                    .map(|(r, s)| format!("{r} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let b = bench::bench(&bench::BenchOptions {
            model: dir.clone(),
            steps: None,
            teacher: Some(teacher.clone()),
            teacher_steps: TEACHER_STEPS,
            runtime: "tract".into(),
            batches: batches.clone(),
            warmup: 2,
            runs: args.runs,
            out: Some(out(&format!("bench/{name}"))),
            precision: export::Precision::Fp32,
            against: None,
            target: export::ExportTarget::Generic,
        })?;
        let speed: Vec<Speed> = b
            .per_batch
            .iter()
            .zip(&b.student.per_batch)
            .zip(b.teacher.iter().flat_map(|t| &t.per_batch))
            .map(|((r, s), t)| Speed {
                batch: r.batch,
                student_p50_ms: s.latency_ms.p50,
                teacher_p50_ms: t.latency_ms.p50,
                speedup: t.latency_ms.p50 / s.latency_ms.p50,
            })
            .collect();
        st.done(
            &format!("bench {name}"),
            true,
            speed
                .iter()
                .map(|s| format!("batch {} {:.1}x", s.batch, s.speedup))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let e = eval::eval(&eval::EvalOptions {
            model: dir.clone(),
            steps: None,
            dataset: ds.name(),
            data_dir: args.data_dir.clone(),
            count: eval_count,
            seed: 11,
            teacher: Some(teacher.clone()),
            teacher_steps: TEACHER_STEPS,
            out: Some(out(&format!("eval/{name}"))),
            runtime: "tract".into(),
            featurenet: None,
            device: Device::Cpu,
            per_step: false,
        })?;
        let quality = match (
            primary_metric(&e.model.metrics),
            e.teacher.as_ref().and_then(|t| primary_metric(&t.metrics)),
        ) {
            (Some((metric, s)), Some((_, t))) => Some(Quality {
                metric: metric.into(),
                student: s,
                teacher: t,
                ratio: s / t,
            }),
            _ => None,
        };
        st.done(
            &format!("eval {name}"),
            quality.is_some(),
            match &quality {
                Some(q) => format!(
                    "{} {:.4} vs teacher DDIM-{TEACHER_STEPS} {:.4} ({:.2}x), {} samples",
                    q.metric, q.student, q.teacher, q.ratio, eval_count
                ),
                None => "no quality metric for this dataset".into(),
            },
        );
        students.push(StudentSummary {
            name: name.into(),
            method: method.into(),
            steps,
            model: dir.display().to_string(),
            graph: graph.display().to_string(),
            nodes: ex.node_count,
            parity,
            quality,
            speed,
        });
    }

    // 4. the deployment bundle of the 3-step student, verified as a receiving team would
    let bundle_dir = out("bundle");
    let m = bundle::build(&bundle::BuildOptions {
        model: if_dir.clone(),
        target: "tract".into(),
        out: bundle_dir.clone(),
        force: false,
        steps: None,
        precision: export::Precision::Fp32,
        cache_dir: args.out.join("engine-cache"),
        runs: args.runs,
    })?;
    let vr = bundle::verify(&bundle_dir, 3)?;
    let engine = m.engines.first().context("the bundle has no engine")?;
    let bundle_ok = engine.status == "pass" && vr.passed;
    st.done(
        "bundle",
        bundle_ok,
        format!(
            "{} ({}), parity {}, verify {} ({} files)",
            bundle_dir.display(),
            engine.target,
            engine.status,
            bundle::pass_fail(vr.passed),
            vr.files_checked
        ),
    );

    // 5. the picture: teacher DDIM-50 and both students from the same noise
    let png = out("samples.png");
    picture(&ds, &teacher, &if_dir, &kdm_dir, &png)?;
    st.done("picture", true, png.display().to_string());

    let passed = st.list.iter().all(|s| s.status == "pass");
    let summary = DemoSummary {
        dataset: ds.name(),
        teacher: teacher.display().to_string(),
        teacher_cached,
        stages: st.list,
        students,
        bundle: Some(BundleSummary {
            path: bundle_dir.display().to_string(),
            target: engine.target.clone(),
            status: engine.status.clone(),
            verify: bundle::pass_fail(vr.passed).into(),
        }),
        png: png.display().to_string(),
        seconds: t_all.elapsed().as_secs_f64(),
        passed,
    };
    let path = summary_path;
    crate::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    print_summary(&summary, &installed);
    println!("  summary  {}", path.display());
    println!("demo: {}", if passed { "PASS" } else { "FAIL" });
    Ok(passed)
}

fn print_summary(s: &DemoSummary, installed: &[String]) {
    println!();
    println!(
        "flashctl demo — {} teacher ({}), CPU, {:.0} s",
        s.dataset,
        if s.teacher_cached {
            "cached"
        } else {
            "trained now"
        },
        s.seconds
    );
    let metric = s
        .students
        .iter()
        .find_map(|x| x.quality.as_ref().map(|q| q.metric.clone()))
        .unwrap_or_else(|| "quality".into());
    println!(
        "  {:<18} {:>5} {:>9} {:>12} {:>14} {:>22}  parity",
        "model", "steps", metric, "vs teacher", "p50 batch 1", "speedup vs DDIM-50"
    );
    if let Some(q) = s.students.iter().find_map(|x| x.quality.as_ref()) {
        let t_ms = s.students[0]
            .speed
            .first()
            .map(|x| format!("{:.3} ms", x.teacher_p50_ms))
            .unwrap_or_default();
        println!(
            "  {:<18} {:>5} {:>9.4} {:>12} {:>14} {:>22}  (reference)",
            "teacher DDIM-50", TEACHER_STEPS, q.teacher, "1.00x", t_ms, "1.0x"
        );
    }
    for x in &s.students {
        let (m, ratio) = x
            .quality
            .as_ref()
            .map(|q| (format!("{:.4}", q.student), format!("{:.2}x", q.ratio)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let p50 = x
            .speed
            .first()
            .map(|v| format!("{:.3} ms", v.student_p50_ms))
            .unwrap_or_default();
        let speedup = x
            .speed
            .iter()
            .map(|v| format!("{:.1}x@{}", v.speedup, v.batch))
            .collect::<Vec<_>>()
            .join(" ");
        let parity = x
            .parity
            .iter()
            .map(|(r, st)| format!("{r} {st}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  {:<18} {:>5} {:>9} {:>12} {:>14} {:>22}  {}",
            x.name, x.steps, m, ratio, p50, speedup, parity
        );
    }
    if let Some(b) = &s.bundle {
        println!(
            "  bundle   {} ({}): parity {}, verify {}",
            b.path, b.target, b.status, b.verify
        );
    }
    println!("  picture  {}", s.png);
    if !installed.iter().any(|r| r == "ort-cpu") {
        println!("  {}", validation::ORT_NOT_INSTALLED);
    }
}

/// Samples of the teacher (DDIM-50) and both students from the same seeded noise: scatter
/// panels over the data (2-D), or one image grid per model stacked (images).
fn picture(
    ds: &data::Dataset,
    teacher: &Path,
    if_dir: &Path,
    kdm_dir: &Path,
    png: &Path,
) -> Result<()> {
    let models: [(&str, &Path, Option<usize>); 3] = [
        ("teacher, DDIM 50 steps", teacher, Some(TEACHER_STEPS)),
        ("Imagine Flash student, 3 steps", if_dir, None),
        ("KDM generator, 1 step", kdm_dir, None),
    ];
    let n = if ds.sample_shape().len() == 1 {
        2000
    } else {
        16
    };
    let mut samples = vec![];
    for (title, dir, steps) in models {
        let m = crate::teacher::Teacher::open_on(dir, "tract", &Device::Cpu)?;
        let plan = m.plan(steps, None)?;
        let (noise, labels) = export::seeded_noise(&m.sample_shape(), m.num_classes(), n, 1)?;
        let x = m.sample(&plan, &noise, labels.as_ref())?;
        samples.push((title, x));
    }
    if let Some(dir) = png.parent() {
        fsx::create_dir_all(dir)?;
    }
    if ds.sample_shape().len() == 1 {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        let (data, _) = ds.batch(&mut rng, 4000);
        let reference: Vec<[f32; 2]> = data.chunks(2).map(|c| [c[0], c[1]]).collect();
        let points: Vec<(String, Vec<[f32; 2]>)> = samples
            .iter()
            .map(|(title, x)| {
                let v = x.flatten_all()?.to_vec1::<f32>()?;
                Ok((
                    title.to_string(),
                    v.chunks(2).map(|c| [c[0], c[1]]).collect(),
                ))
            })
            .collect::<Result<_>>()?;
        let panels: Vec<(&str, &[[f32; 2]])> = points
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
            .collect();
        return crate::plot::scatter_panels(png, &panels, &reference);
    }
    // images: rows of 16, one row per model (teacher, IF, KDM)
    let dims = samples[0].1.dims().to_vec();
    if dims.len() != 4 {
        bail!("cannot draw samples of shape {dims:?}");
    }
    let mut all = vec![];
    for (_, x) in &samples {
        all.extend(x.flatten_all()?.to_vec1::<f32>()?);
    }
    crate::plot::image_grid(png, &all, [3 * dims[0], dims[1], dims[2], dims[3]], dims[0])
}
