//! Training memory does not grow with the iteration count, on every training path: teacher
//! (DDPM), Imagine Flash, KDM (plain and adversarial) and the FD-FMNIST feature network.
//!
//! A counting global allocator gives the peak of live heap bytes of each run. A run of 2N
//! iterations must peak where a run of N does: before the optimiser detached its state, each
//! EMA kept the previous one (and its weights) alive through candle's op graph, so the peak grew
//! by one model per iteration (KDM on 2-D data: ~7 MB per iteration, 14.6 GB at 2,000).
//! One #[test] so the runs do not overlap in the shared counter.

use clap::Parser;
use flashctl::cli::{Cli, Command, PairsCommand, TeacherCommand};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Count `size` new live bytes (when the allocation succeeded) and pass the pointer on.
fn counted(p: *mut u8, size: usize) -> *mut u8 {
    if !p.is_null() {
        let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    p
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(unsafe { System.alloc(layout) }, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        counted(q, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak live heap bytes above the level at the start, while `f` runs.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

fn cli(args: &[&str]) -> Command {
    let mut argv = vec!["flashctl"];
    argv.extend(args);
    Cli::parse_from(argv).command
}

fn run(args: &[&str]) {
    match cli(args) {
        Command::Teacher(TeacherCommand::Train(a)) => {
            flashctl::train::run_command(&a, false).unwrap();
        }
        Command::Distill(a) => {
            flashctl::distill::command::run(&a).unwrap();
        }
        Command::Pairs(PairsCommand::Generate(a)) => {
            flashctl::pairs::run(&a).unwrap();
        }
        other => panic!("not a training command: {other:?}"),
    }
}

/// The peaks of the same run at `n` and `2n` iterations (`--iters` appended).
fn peaks(dir: &Path, name: &str, args: &[&str], n: usize) -> (usize, usize) {
    let mut out = vec![];
    for iters in [n, 2 * n] {
        let d = dir.join(format!("{name}-{iters}"));
        let iters = iters.to_string();
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--iters", &iters, "--out", d.to_str().unwrap()]);
        out.push(peak_of(|| run(&a)));
    }
    (out[0], out[1])
}

fn assert_flat(name: &str, (short, long): (usize, usize)) {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{name}: peak live heap {:.2} MiB at N, {:.2} MiB at 2N",
        mib(short),
        mib(long)
    );
    // generous: 10% + 1 MiB of allocator and scheduling noise; the old leak added a whole model
    // per iteration (tens of MiB over these runs)
    assert!(
        long as f64 <= short as f64 * 1.10 + 1024.0 * 1024.0,
        "{name}: memory grows with iterations: {:.2} MiB at N, {:.2} MiB at 2N",
        mib(short),
        mib(long)
    );
}

/// Tiny Fashion-MNIST-shaped IDX files (random pixels), so the feature network trains here.
fn write_idx(dir: &Path) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", 256u32), ("t10k", 64)] {
        let mut img = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            img.extend(d.to_be_bytes());
        }
        img.extend((0..n * 784).map(|_| rng.gen::<u8>()));
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), img).unwrap();
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(n.to_be_bytes());
        lab.extend((0..n).map(|_| rng.gen_range(0..10u8)));
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), lab).unwrap();
    }
}

#[test]
fn peak_memory_of_every_training_path_does_not_grow_with_iterations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 1. teacher: DDPM on 2-D data (MLP), after one short run for the one-time allocations
    let teacher_args = [
        "teacher",
        "train",
        "--dataset",
        "checkerboard",
        "--preset",
        "tiny",
    ];
    let warm = dir.join("warm-up");
    let mut a = teacher_args.to_vec();
    a.extend(["--iters", "2", "--out", warm.to_str().unwrap()]);
    run(&a);
    assert_flat("teacher", peaks(dir, "teacher", &teacher_args, 150));
    let teacher = dir.join("teacher-300");
    let t = teacher.to_str().unwrap();
    // 2. Imagine Flash, 2 steps
    let if_args = ["distill", "--teacher", t, "--steps", "2"];
    assert_flat("imagine-flash", peaks(dir, "if", &if_args, 60));
    // 3. KDM on the teacher's pairs, plain and adversarial
    let pairs = dir.join("pairs");
    let p = pairs.to_str().unwrap();
    run(&[
        "pairs",
        "generate",
        "--teacher",
        t,
        "--count",
        "512",
        "--steps",
        "10",
        "--out",
        p,
    ]);
    let kdm = ["distill", "--method", "kdm", "--pairs", p];
    assert_flat("kdm", peaks(dir, "kdm", &kdm, 60));
    let adv = ["distill", "--method", "kdm", "--pairs", p, "--adversarial"];
    assert_flat("kdm-adversarial", peaks(dir, "kdm-adv", &adv, 60));
    // 4. the feature network (its own loop and candle's AdamW)
    let idx = dir.join("idx");
    write_idx(&idx);
    let fnet = |iters: usize| {
        let out = dir.join(format!("featurenet-{iters}"));
        peak_of(|| {
            flashctl::eval::featurenet::train(Some(&idx), &out, iters, 0).unwrap();
        })
    };
    assert_flat("featurenet", (fnet(20), fnet(40)));
}
