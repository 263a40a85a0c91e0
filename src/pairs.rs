//! Offline (x_T, x_0[, class_label]) pairs from a teacher's M-step DDIM sampler, for offline
//! distillation (KDM). A pairs directory holds `pairs-NNNNN.safetensors` shards (tensors `x_t`,
//! `x_0`, and `class_labels` int64 for class-conditional teachers) and `index.json`.
//!
//! Resumable: shard i is a pure function of (teacher, steps, seed, i), each shard is written
//! atomically and only then listed in the index, so a run killed at any point and rerun with
//! the same arguments finishes with byte-identical files.

use crate::checkpoint::{self, sha256_hex};
use crate::schedule::ScheduleConfig;
use crate::teacher::Teacher;
use crate::train::randn;
use crate::train_loop::step_rng;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "index.json";
pub const SCHEMA_VERSION: u32 = 1;

/// What a pairs directory was generated from; a rerun must ask for exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairsRun {
    pub teacher: String,
    /// `Teacher::fingerprint`: the same weights under another path are the same teacher.
    pub teacher_sha256: String,
    pub steps: usize,
    pub count: usize,
    pub shard_size: usize,
    pub seed: u64,
    pub sample_shape: Vec<usize>,
    pub num_classes: Option<usize>,
    pub timesteps: Vec<usize>,
    /// The teacher's schedule (a KDM student records it and starts from x_T like the teacher).
    pub schedule: ScheduleConfig,
    /// Teacher's dataset name when known (students inherit it).
    pub dataset: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub file: String,
    pub count: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsIndex {
    pub schema_version: u32,
    pub run: PairsRun,
    pub shards: Vec<Shard>,
    pub complete: bool,
}

impl PairsIndex {
    fn shard_count(&self) -> usize {
        self.run.count.div_ceil(self.run.shard_size)
    }
}

pub fn shard_name(i: usize) -> String {
    format!("pairs-{i:05}.safetensors")
}

pub struct GenerateOptions {
    pub count: usize,
    pub steps: usize,
    pub shard_size: usize,
    pub seed: u64,
    /// Teacher batch within a shard (memory bound).
    pub batch: usize,
    pub progress: bool,
    /// Where the teacher's batches run; shards are written from host memory. Shards made on
    /// different devices differ at float rounding level, so a resumed run should stay on one.
    pub device: Device,
}

pub struct GenerateReport {
    pub shards_written: usize,
    pub shards_reused: usize,
    pub pairs: usize,
    pub seconds: f64,
}

fn write_index(dir: &Path, index: &PairsIndex) -> Result<()> {
    checkpoint::write_atomic(
        &dir.join(INDEX_FILE),
        serde_json::to_string_pretty(index)?.as_bytes(),
    )?;
    Ok(())
}

fn read_index(dir: &Path) -> Result<PairsIndex> {
    let p = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("{}: not a pairs directory", p.display()))?;
    let index: PairsIndex =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: invalid index: {e}", p.display()))?;
    if index.schema_version != SCHEMA_VERSION {
        bail!(
            "{}: schema_version {} (this flashctl reads {SCHEMA_VERSION})",
            p.display(),
            index.schema_version
        );
    }
    Ok(index)
}

/// The pairs of shard `i`: seeded noise and labels, then the teacher's sampler.
fn make_shard(
    teacher: &Teacher,
    plan: &crate::sampler::SamplerPlan,
    run: &PairsRun,
    i: usize,
    batch: usize,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let start = i * run.shard_size;
    let n = run.shard_size.min(run.count - start);
    let per: usize = run.sample_shape.iter().product();
    let mut rng = step_rng(run.seed, i);
    let noise = randn(&mut rng, n * per);
    let labels: Option<Vec<i64>> = run
        .num_classes
        .map(|k| (0..n).map(|_| rng.gen_range(0..k) as i64).collect());
    let mut shape = vec![n];
    shape.extend(&run.sample_shape);
    let x_t = Tensor::from_vec(noise, shape, &Device::Cpu)?;
    let labels = labels
        .map(|l| Tensor::from_vec(l, n, &Device::Cpu))
        .transpose()?;
    let mut outs = vec![];
    let mut at = 0;
    while at < n {
        let b = batch.min(n - at);
        let x = x_t.narrow(0, at, b)?.to_device(device)?;
        let y = labels
            .as_ref()
            .map(|l| l.narrow(0, at, b)?.to_device(device))
            .transpose()?;
        outs.push(
            teacher
                .sample(plan, &x, y.as_ref())?
                .to_device(&Device::Cpu)?,
        );
        at += b;
    }
    let x_0 = Tensor::cat(&outs, 0)?;
    let mut m = HashMap::new();
    m.insert("x_t".to_string(), x_t);
    m.insert("x_0".to_string(), x_0);
    if let Some(l) = labels {
        m.insert("class_labels".to_string(), l);
    }
    Ok(m)
}

/// `flashctl pairs generate`: generate (or finish generating) `o.count` pairs into `out`.
pub fn generate(
    teacher: &Teacher,
    teacher_source: &str,
    dataset: String,
    o: &GenerateOptions,
    out: &Path,
) -> Result<GenerateReport> {
    let start = std::time::Instant::now();
    if o.count == 0 || o.shard_size == 0 || o.batch == 0 {
        bail!("--count, --shard-size and --batch must be at least 1");
    }
    let plan = teacher.plan(Some(o.steps), Some(crate::sampler::SamplerKind::Ddim))?;
    let run = PairsRun {
        teacher: teacher_source.to_string(),
        teacher_sha256: teacher.fingerprint()?,
        steps: o.steps,
        count: o.count,
        shard_size: o.shard_size,
        seed: o.seed,
        sample_shape: teacher.sample_shape(),
        num_classes: teacher.num_classes(),
        timesteps: plan.timesteps.clone(),
        schedule: teacher.schedule().clone(),
        dataset,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // 1. resume: the index must describe this very run; stray temp files are discarded
    let mut index = if out.join(INDEX_FILE).exists() {
        let old = read_index(out)?;
        let same = PairsRun {
            teacher: old.run.teacher.clone(),
            ..run.clone()
        };
        if old.run != same {
            bail!(
                "{} holds pairs of a different run (teacher, steps, count, shard size or seed differ); use a new --out, or --force to replace it",
                out.display()
            );
        }
        old
    } else {
        PairsIndex {
            schema_version: SCHEMA_VERSION,
            run: run.clone(),
            shards: vec![],
            complete: false,
        }
    };
    for e in crate::fsx::read_dir(out)? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".partial") || (name.starts_with('.') && name.ends_with(".tmp")) {
            crate::fsx::remove_file(&p)?;
        }
    }
    // a listed shard that no longer matches its hash is regenerated (it is deterministic)
    let before = index.shards.len();
    index.shards.retain(|s| {
        std::fs::read(out.join(&s.file))
            .map(|b| sha256_hex(&b) == s.sha256)
            .unwrap_or(false)
    });
    if index.shards.len() != before {
        eprintln!(
            "pairs: {} listed shard(s) missing or damaged, regenerating",
            before - index.shards.len()
        );
    }
    let reused = index.shards.len();
    let total = index.shard_count();
    let mut pb = crate::progress::Progress::new("shard", total, o.progress);
    pb.resume_at(reused);
    // 2. every shard not yet listed, in order; write it, then list it
    let mut written = 0;
    for i in 0..total {
        let file = shard_name(i);
        if index.shards.iter().any(|s| s.file == file) {
            continue;
        }
        let tensors = make_shard(teacher, &plan, &run, i, o.batch, &o.device)
            .with_context(|| format!("generating shard {file}"))?;
        let path = out.join(&file);
        checkpoint::save_tensors(&path, &tensors)?;
        let sha256 = sha256_hex(&crate::fsx::read(&path)?);
        index.shards.push(Shard {
            file,
            count: tensors["x_t"].dims()[0],
            sha256,
        });
        index.shards.sort_by(|a, b| a.file.cmp(&b.file));
        index.complete = index.shards.len() == total;
        write_index(out, &index)?;
        written += 1;
        pb.inc("");
    }
    pb.finish();
    if !index.complete {
        index.complete = true;
        write_index(out, &index)?;
    }
    Ok(GenerateReport {
        shards_written: written,
        shards_reused: reused,
        pairs: o.count,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A complete pairs directory in memory.
pub struct PairSet {
    pub dir: PathBuf,
    pub run: PairsRun,
    /// [N, ...sample shape]
    pub x_t: Tensor,
    pub x_0: Tensor,
    /// [N] int64 for class-conditional teachers.
    pub labels: Option<Tensor>,
}

impl PairSet {
    /// Open and check every shard (present, hash as indexed, shapes as the run says), naming
    /// the shard that fails.
    pub fn open(dir: &Path) -> Result<PairSet> {
        if !dir.is_dir() {
            bail!("{}: pairs directory does not exist", dir.display());
        }
        let index = read_index(dir)?;
        let total = index.shard_count();
        if !index.complete || index.shards.len() != total {
            bail!(
                "{}: pair generation is incomplete ({} of {total} shards); rerun `flashctl pairs generate` with the same arguments to finish it",
                dir.display(),
                index.shards.len()
            );
        }
        let (mut xt, mut x0, mut ls) = (vec![], vec![], vec![]);
        for (i, s) in index.shards.iter().enumerate() {
            let path = dir.join(&s.file);
            if s.file != shard_name(i) {
                bail!("{}: shard {i} is listed as {}", dir.display(), s.file);
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow!("shard {}: missing or unreadable ({e})", path.display()))?;
            if sha256_hex(&bytes) != s.sha256 {
                bail!(
                    "shard {}: truncated or corrupt (sha256 differs from {})",
                    path.display(),
                    INDEX_FILE
                );
            }
            let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| anyhow!("shard {}: {e}", path.display()))?;
            let get = |k: &str| {
                t.get(k)
                    .cloned()
                    .ok_or_else(|| anyhow!("shard {}: tensor `{k}` missing", path.display()))
            };
            let mut want = vec![s.count];
            want.extend(&index.run.sample_shape);
            for k in ["x_t", "x_0"] {
                let v = get(k)?;
                if v.dims() != want || v.dtype() != DType::F32 {
                    bail!(
                        "shard {}: `{k}` is {:?} {:?}, expected f32 {want:?}",
                        path.display(),
                        v.dtype(),
                        v.dims()
                    );
                }
            }
            xt.push(get("x_t")?);
            x0.push(get("x_0")?);
            if index.run.num_classes.is_some() {
                let l = get("class_labels")?;
                if l.dims() != [s.count] || l.dtype() != DType::I64 {
                    bail!(
                        "shard {}: `class_labels` is {:?} {:?}, expected i64 [{}]",
                        path.display(),
                        l.dtype(),
                        l.dims(),
                        s.count
                    );
                }
                ls.push(l);
            }
        }
        let x_0 = Tensor::cat(&x0, 0)?;
        let finite = x_0.abs()?.max_all()?.to_scalar::<f32>()?.is_finite();
        if !finite {
            bail!("{}: x_0 holds NaN or Inf", dir.display());
        }
        Ok(PairSet {
            dir: dir.to_path_buf(),
            run: index.run,
            x_t: Tensor::cat(&xt, 0)?,
            x_0,
            labels: if ls.is_empty() {
                None
            } else {
                Some(Tensor::cat(&ls, 0)?)
            },
        })
    }

    pub fn len(&self) -> usize {
        self.x_t.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `flashctl pairs generate` argument handling.
pub fn run(a: &crate::cli::PairsGenerateArgs) -> Result<GenerateReport> {
    // an earlier pairs run in --out is resumed (generate refuses different arguments) unless
    // --force starts over; anything else there is refused or, with --force, replaced
    if a.force || !a.out.join(INDEX_FILE).exists() {
        crate::out_dir::prepare(
            &a.out,
            "--out",
            crate::out_dir::Existing::from_flags(a.force, false),
        )?;
    }
    let device = crate::device::open(&a.device)?;
    let teacher = Teacher::open_on(&a.teacher, &a.teacher_runtime, &device)?;
    let dataset = match &teacher {
        Teacher::Native(m) => m.config.dataset.clone(),
        Teacher::Onnx(_) => "unknown".into(),
    };
    let points = teacher.sample_shape().len() == 1;
    let o = GenerateOptions {
        count: a.count,
        steps: a.steps,
        shard_size: a.shard_size,
        seed: a.seed,
        batch: a.batch.unwrap_or(if points { 1024 } else { 64 }),
        progress: true,
        device,
    };
    generate(
        &teacher,
        &a.teacher.display().to_string(),
        dataset,
        &o,
        &a.out,
    )
}
