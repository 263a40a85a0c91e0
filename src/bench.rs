//! `flashctl bench`: latency (warm-up, then p50/p90/p99 over N runs) and throughput per batch
//! size, in one runtime, for the student's exported K-step graph, one student denoiser call, and
//! the teacher's N-step sampler run step by step (one exported denoiser call per step, the DDIM
//! update on the host, as a deployment without flashctl's unrolled graph would run it).
//!
//! `speedup` = teacher N-step latency / student graph latency (same runtime and batch);
//! `unroll_overhead` = student K-step graph latency / (K x one student denoiser call).

use crate::bench_against::{AgainstReport, OtherGraph};
use crate::checkpoint;
use crate::export::{self, Precision};
use crate::sampler::{SamplerKind, StepPlan};
use crate::validation::{make_runtime, BadInput};
use anyhow::{Context, Result};
use candle_core::Device;
use flashctl_validate::{HostData, HostTensor, Runtime};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct BenchOptions {
    pub model: PathBuf,
    /// Steps of the model's exported sampler (none: its own).
    pub steps: Option<usize>,
    pub teacher: Option<PathBuf>,
    pub teacher_steps: usize,
    pub runtime: String,
    pub batches: Vec<usize>,
    pub warmup: usize,
    pub runs: usize,
    /// Where bench.json and latency.png go (none: nothing is written).
    pub out: Option<PathBuf>,
    /// Precision of every exported graph (student, student call, teacher call).
    pub precision: Precision,
    /// Another exporter's graph of the same model, timed interleaved with flashctl's.
    pub against: Option<PathBuf>,
    /// Lowering of flashctl's graphs (`export --target`).
    pub target: export::ExportTarget,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub batch: usize,
    pub latency_ms: Percentiles,
    /// samples per second at p50
    pub throughput: f64,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub what: String,
    pub model: String,
    pub steps: usize,
    pub per_batch: Vec<Latency>,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub batch: usize,
    pub speedup: Option<f64>,
    pub unroll_overhead: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub runtime: String,
    /// `fp32` or `fp16` (the graphs' compute precision; inputs and outputs stay fp32)
    pub precision: String,
    /// lowering of flashctl's graphs (`export --target`)
    pub target: String,
    pub provider: String,
    pub device: String,
    pub warmup: usize,
    pub runs: usize,
    pub student: Series,
    pub student_call: Series,
    pub teacher: Option<Series>,
    /// at the first batch size; per batch below
    pub speedup: Option<f64>,
    pub unroll_overhead: f64,
    pub per_batch: Vec<Ratio>,
    pub png: Option<String>,
    /// `--against OTHER.onnx`
    pub against: Option<AgainstReport>,
}

/// Milliseconds per run (the `latency_ms` object of every report).
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

pub(crate) fn stats(batch: usize, t: Vec<f64>) -> Latency {
    let q = |p: f64| flashctl_validate::percentile(&t, p);
    let p50 = q(0.5);
    Latency {
        batch,
        latency_ms: Percentiles {
            p50,
            p90: q(0.9),
            p99: q(0.99),
            mean: t.iter().sum::<f64>() / t.len() as f64,
        },
        throughput: batch as f64 / (p50 / 1e3),
    }
}

/// Seeded inputs of a graph at `batch`: noise / x (normal), t (the middle timestep), labels.
fn inputs_for(graph: &Path, batch: usize) -> Result<Vec<HostTensor>> {
    let m = flashctl_exporters::decode_model(&crate::fsx::read(graph)?)?;
    let manifest = export::manifest_beside(graph).map_err(anyhow::Error::msg)?;
    let d = &manifest
        .model
        .as_ref()
        .context("bench of a text-to-image pipeline graph is not supported yet")?
        .denoiser;
    let (noise, labels) = export::seeded_noise(&d.sample_shape(), d.num_classes(), batch, 7)?;
    let mut out = vec![];
    for i in &m.graph.unwrap().input {
        let shape = |t: &candle_core::Tensor| t.dims().to_vec();
        out.push(match i.name.as_str() {
            "noise" | "x" => {
                HostTensor::f32(&i.name, shape(&noise), noise.flatten_all()?.to_vec1()?)
            }
            "t" => HostTensor::f32(&i.name, vec![batch], vec![500.0; batch]),
            "class_labels" => {
                let l = labels.as_ref().context("labels")?;
                HostTensor::i64(&i.name, shape(l), l.to_vec1()?)
            }
            other => anyhow::bail!("graph input `{other}` is not one flashctl exports"),
        });
    }
    Ok(out)
}

fn prepared(runtime: &str, graph: &Path, example: &[HostTensor]) -> Result<Box<dyn Runtime>> {
    let mut rt = make_runtime(runtime, graph).map_err(|e| BadInput(e.to_string()))?;
    rt.prepare(&crate::fsx::read(graph)?, example)?;
    Ok(rt)
}

/// One DDIM step on the host (the teacher's step-by-step loop).
fn host_step(s: &StepPlan, x: &[f32], out: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(out)
        .map(|(&x, &o)| {
            let mut x0 = s.x0_x * x + s.x0_out * o;
            if let Some(r) = s.clip {
                x0 = x0.clamp(-r, r);
            }
            let eps = s.eps_x * x + s.eps_out * o;
            s.next_x * x + s.next_x0 * x0 + s.next_eps * eps
        })
        .collect()
}

pub fn bench(o: &BenchOptions) -> Result<BenchReport> {
    if o.batches.is_empty() || o.batches.contains(&0) || o.runs == 0 {
        anyhow::bail!(BadInput("--batch sizes and --runs must be positive".into()));
    }
    if o.runtime == "candle" && o.precision != Precision::Fp32 {
        anyhow::bail!(BadInput(
            "--runtime candle runs the eager model in fp32; --precision fp16 needs a graph runtime"
                .into()
        ));
    }
    if let Some(out) = &o.out {
        crate::out_dir::prepare_report(out, "--out")?;
    }
    // the graphs exported for timing live in a scratch dir removed on every exit path
    let scratch = crate::out_dir::ScratchDir::new("bench")?;
    let work = scratch.path();
    let student = checkpoint::load(&o.model, &Device::Cpu)?;
    let k = student
        .config
        .sampler_plan(o.steps, None)
        .map_err(|e| BadInput(format!("--steps: {e}")))?
        .steps
        .len();
    let g_student = work.join("student/model.onnx");
    let form = export::GraphForm {
        precision: o.precision,
        target: o.target,
        opset: None,
    };
    export::export(&o.model, o.steps, None, form, &g_student)?;
    let g_call = work.join("student_call/model.onnx");
    export::export_denoiser(&o.model, form, &g_call)?;
    let teacher = match &o.teacher {
        Some(t) => {
            let g = work.join("teacher_call/model.onnx");
            export::export_denoiser(t, form, &g)?;
            let m = checkpoint::load(t, &Device::Cpu)?;
            let plan = m
                .config
                .sampler_plan(Some(o.teacher_steps), Some(SamplerKind::Ddim))?;
            Some((t.clone(), g, plan))
        }
        None => None,
    };
    let b0 = o.batches[0];
    let mut rt_student = prepared(&o.runtime, &g_student, &inputs_for(&g_student, b0)?)?;
    let mut rt_call = prepared(&o.runtime, &g_call, &inputs_for(&g_call, b0)?)?;
    let mut rt_teacher = match &teacher {
        Some((_, g, _)) => Some(prepared(&o.runtime, g, &inputs_for(g, b0)?)?),
        None => None,
    };
    // --against: read, paired with the flashctl graph of the same kind, checked on one input
    let mut against = match &o.against {
        Some(p) => {
            let other = OtherGraph::read(p)?;
            let (g_ours, rt_ours, what) = if other.is_denoiser_call() {
                (&g_call, &mut rt_call, "denoiser call".to_string())
            } else {
                (
                    &g_student,
                    &mut rt_student,
                    format!("{k}-step sampler graph"),
                )
            };
            let ours_in = inputs_for(g_ours, b0)?;
            let other_in = other.inputs_from(&ours_in, b0)?;
            let mut rt_other = prepared(&o.runtime, p, &other_in)?;
            let diff = crate::bench_against::difference(
                rt_ours.as_mut(),
                &ours_in,
                rt_other.as_mut(),
                &other_in,
                p,
            )?;
            let nodes = flashctl_exporters::decode_model(&crate::fsx::read(g_ours)?)?
                .graph
                .map_or(0, |g| g.node.len());
            Some((
                other.is_denoiser_call(),
                AgainstReport::new(&other, what, nodes, diff),
                other,
                rt_other,
            ))
        }
        None => None,
    };
    let (mut s_lat, mut c_lat, mut t_lat, mut ratios) = (vec![], vec![], vec![], vec![]);
    for &b in &o.batches {
        let si = inputs_for(&g_student, b)?;
        let s = stats(b, rt_student.time(&si, o.warmup, o.runs)?);
        let ci = inputs_for(&g_call, b)?;
        let c = stats(b, rt_call.time(&ci, o.warmup, o.runs)?);
        let t = match (&teacher, rt_teacher.as_mut()) {
            (Some((_, g, plan)), Some(rt)) => {
                let start = inputs_for(g, b)?;
                let lat = flashctl_validate::time_ms(o.warmup.min(1), o.runs, || {
                    teacher_loop(rt.as_mut(), plan, &start, b).map(|_| ())
                })?;
                Some(stats(b, lat))
            }
            _ => None,
        };
        if let Some((is_call, report, other, rt_other)) = against.as_mut() {
            let (g_ours, rt_ours) = if *is_call {
                (&g_call, &mut rt_call)
            } else {
                (&g_student, &mut rt_student)
            };
            let ours_in = inputs_for(g_ours, b)?;
            let other_in = other.inputs_from(&ours_in, b)?;
            report
                .per_batch
                .push(crate::bench_against::time_interleaved(
                    rt_ours.as_mut(),
                    &ours_in,
                    rt_other.as_mut(),
                    &other_in,
                    o.warmup,
                    o.runs,
                    b,
                )?);
        }
        ratios.push(Ratio {
            batch: b,
            speedup: t.as_ref().map(|t| t.latency_ms.p50 / s.latency_ms.p50),
            unroll_overhead: s.latency_ms.p50 / (k as f64 * c.latency_ms.p50),
        });
        s_lat.push(s);
        c_lat.push(c);
        if let Some(t) = t {
            t_lat.push(t);
        }
    }
    let png = o.out.as_ref().map(|d| d.join("latency.png"));
    if let Some(png) = &png {
        std::fs::create_dir_all(png.parent().unwrap())
            .with_context(|| format!("creating {}", png.parent().unwrap().display()))?;
        crate::plot::latency_vs_batch(
            png,
            &[
                ("student graph", &s_lat),
                (
                    "student call x K",
                    &c_lat
                        .iter()
                        .map(|c| {
                            let mut x = c.clone();
                            x.latency_ms.p50 *= k as f64;
                            x
                        })
                        .collect::<Vec<_>>(),
                ),
                ("teacher N-step", &t_lat),
            ],
        )?;
    }
    let report = BenchReport {
        runtime: o.runtime.clone(),
        precision: o.precision.name().to_string(),
        target: o.target.name().to_string(),
        provider: rt_student.provider(),
        device: crate::bundle::device_name(),
        warmup: o.warmup,
        runs: o.runs,
        student: Series {
            what: format!("exported {k}-step sampler graph"),
            model: o.model.display().to_string(),
            steps: k,
            per_batch: s_lat,
        },
        student_call: Series {
            what: "one student denoiser call (exported)".into(),
            model: o.model.display().to_string(),
            steps: 1,
            per_batch: c_lat,
        },
        teacher: teacher.as_ref().map(|(t, _, _)| Series {
            what: format!(
                "teacher DDIM-{} step by step: exported denoiser call + host update",
                o.teacher_steps
            ),
            model: t.display().to_string(),
            steps: o.teacher_steps,
            per_batch: t_lat,
        }),
        speedup: ratios[0].speedup,
        unroll_overhead: ratios[0].unroll_overhead,
        per_batch: ratios,
        png: png.map(|p| p.display().to_string()),
        against: against.map(|(_, report, _, _)| report),
    };
    if let Some(out) = &o.out {
        let path = out.join("bench.json");
        checkpoint::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The teacher's N-step DDIM: one runtime call per step, the update on the host.
fn teacher_loop(
    rt: &mut dyn Runtime,
    plan: &crate::sampler::SamplerPlan,
    start: &[HostTensor],
    batch: usize,
) -> Result<Vec<f32>> {
    let x_in = start.iter().find(|t| t.name == "x").context("x")?;
    let HostData::F32(mut x) = x_in.data.clone() else {
        anyhow::bail!("x is not float32");
    };
    if plan.init_sigma != 1.0 {
        x.iter_mut().for_each(|v| *v *= plan.init_sigma);
    }
    let labels = start.iter().find(|t| t.name == "class_labels").cloned();
    for s in &plan.steps {
        let xin: Vec<f32> = x.iter().map(|v| v * s.in_scale).collect();
        let mut inputs = vec![
            HostTensor::f32("x", x_in.shape.clone(), xin),
            HostTensor::f32("t", vec![batch], vec![s.t as f32; batch]),
        ];
        inputs.extend(labels.clone());
        let out = rt.run(&inputs)?;
        let HostData::F32(o) = &out[0].data else {
            anyhow::bail!("denoiser output is not float32");
        };
        x = host_step(s, &x, o);
    }
    Ok(x)
}

pub fn print(r: &BenchReport) {
    println!(
        "bench on {} ({}), {}; warm-up {}, {} runs",
        r.runtime, r.provider, r.device, r.warmup, r.runs
    );
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "batch", "student p50", "student p99", "call p50", "teacher p50", "speedup", "unroll"
    );
    for (i, ratio) in r.per_batch.iter().enumerate() {
        let s = &r.student.per_batch[i];
        let c = &r.student_call.per_batch[i];
        let t = r
            .teacher
            .as_ref()
            .map(|t| format!("{:.3} ms", t.per_batch[i].latency_ms.p50))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6} {:>11.3} ms {:>11.3} ms {:>11.3} ms {:>14} {:>10} {:>10.3}",
            ratio.batch,
            s.latency_ms.p50,
            s.latency_ms.p99,
            c.latency_ms.p50,
            t,
            ratio
                .speedup
                .map(|x| format!("{x:.1}x"))
                .unwrap_or_else(|| "-".into()),
            ratio.unroll_overhead
        );
    }
    if let Some(a) = &r.against {
        a.print();
    }
    if let Some(p) = &r.png {
        println!("latency plot: {p}");
    }
}
