//! `flashctl bench-train`: time training steps (forward, backward, AdamW, EMA) of a model
//! directory's architecture at a batch size, with the teacher's DDPM loss on its own dataset,
//! and report ms/step and the process's peak memory. `scripts/bench_train_peer.sh` runs the
//! PyTorch peer on the same config in the same run and prints the ratio.

use crate::checkpoint::{self, CONFIG_FILE};
use crate::train::{self, TrainOptions};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct BenchTrainOptions {
    pub model: PathBuf,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub data_dir: Option<PathBuf>,
    pub device: candle_core::Device,
}

#[derive(Debug, Serialize)]
pub struct BenchTrainReport {
    pub model: String,
    pub architecture: String,
    pub parameters: usize,
    pub dataset: String,
    pub batch: usize,
    pub device: String,
    pub threads: usize,
    pub warmup: usize,
    pub steps: usize,
    pub p50_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Peak resident memory of the whole process (getrusage), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory after the warm-up steps and after the last step, MiB: their difference
    /// is what the timed steps retained.
    pub rss_after_warmup_mib: f64,
    pub rss_after_steps_mib: f64,
}

/// Resident memory of this process now, MiB (Linux /proc; 0 elsewhere).
pub fn current_rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1024.0 * 1024.0)
}

/// Peak resident memory of this process so far, MiB.
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the struct we pass
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

pub fn run(o: &BenchTrainOptions) -> Result<BenchTrainReport> {
    if o.batch == 0 {
        bail!("--batch 0: a training step needs at least 1 sample");
    }
    if o.steps == 0 {
        bail!("--steps 0: nothing to time (give at least 1)");
    }
    let cfg_path = o.model.join(CONFIG_FILE);
    let config: checkpoint::ModelConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| format!("parsing {}", cfg_path.display()))?;
    let ds =
        crate::data::open(&config.dataset, o.data_dir.as_deref(), None).with_context(|| {
            format!(
                "{}: dataset `{}` of the model (bench-train trains on it)",
                o.model.display(),
                config.dataset
            )
        })?;
    let parameters = checkpoint::expected_parameters(&config.denoiser)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let work = scratch_dir()?;
    let rss_before = current_rss_mib();
    let opts = TrainOptions {
        iters: o.warmup + o.steps,
        batch: o.batch,
        checkpoint_every: usize::MAX,
        time_budget_s: None,
        ..train::preset_for(&ds, train::Preset::Tiny).1
    };
    let report = train::train_teacher(
        &ds,
        config.denoiser.clone(),
        config.schedule.clone(),
        opts,
        work.path(),
        false,
        false,
        &o.device,
    )?;
    let rss_after_steps = current_rss_mib();
    let mut timed: Vec<f64> = report.step_seconds[o.warmup..]
        .iter()
        .map(|s| s * 1e3)
        .collect();
    let mean = timed.iter().sum::<f64>() / timed.len() as f64;
    timed.sort_by(|a, b| a.total_cmp(b));
    Ok(BenchTrainReport {
        model: o.model.display().to_string(),
        architecture: match &config.denoiser {
            crate::models::Denoiser::Mlp(_) => "mlp",
            crate::models::Denoiser::Unet(_) => "unet",
            crate::models::Denoiser::Kdm(_) => "kdm",
        }
        .to_string(),
        parameters,
        dataset: config.dataset.clone(),
        batch: o.batch,
        device: report.device.clone(),
        threads: rayon::current_num_threads(),
        warmup: o.warmup,
        steps: o.steps,
        p50_ms: flashctl_validate::percentile(&timed, 0.5),
        mean_ms: mean,
        min_ms: timed[0],
        max_ms: timed[timed.len() - 1],
        peak_rss_mib: peak_rss_mib(),
        rss_after_warmup_mib: o
            .warmup
            .checked_sub(1)
            .map_or(rss_before, |i| report.rss_mib[i]),
        rss_after_steps_mib: rss_after_steps,
    })
}

/// A scratch directory for the run's checkpoint, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir() -> Result<ScratchDir> {
    let dir = std::env::temp_dir().join(format!("flashctl-bench-train.{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(ScratchDir(dir))
}

pub fn print_report(r: &BenchTrainReport) {
    println!(
        "bench-train {} ({}, {} parameters, {}) batch {} on {} ({} threads)",
        r.model, r.architecture, r.parameters, r.dataset, r.batch, r.device, r.threads
    );
    println!(
        "  {} steps after {} warm-up: p50 {:.1} ms/step, mean {:.1}, min {:.1}, max {:.1}",
        r.steps, r.warmup, r.p50_ms, r.mean_ms, r.min_ms, r.max_ms
    );
    println!(
        "  peak RSS {:.0} MiB; RSS after warm-up {:.0} MiB, after the timed steps {:.0} MiB",
        r.peak_rss_mib, r.rss_after_warmup_mib, r.rss_after_steps_mib
    );
}
