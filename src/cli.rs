//! Command-line interface (clap derive). Exit codes: 0 success, 1 parity failure, 2 bad input or
//! unusable runtime.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "flashctl",
    version,
    about = "Distil diffusion teachers into few-step students, export the sampler as ONE ONNX graph, validate parity across runtimes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Teacher models: train one in candle.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Sample eagerly from a model directory (PNG, and raw tensor with --out).
    Sample(SampleArgs),
    /// Offline (x_T, x_0) pairs from a teacher, for offline distillation (KDM).
    #[command(subcommand)]
    Pairs(PairsCommand),
    /// Distil a teacher into a few-step student (Imagine Flash) or pairs into a one-step
    /// generator (KDM).
    Distill(DistillArgs),
    /// Sample quality against held-out data (swd/mmd for 2-D, FD-FMNIST/precision/recall for
    /// Fashion-MNIST), optionally against a teacher on the same noise.
    Eval(EvalArgs),
    /// The feature network behind FD-FMNIST.
    #[command(subcommand)]
    Featurenet(FeaturenetCommand),
    /// Export the fixed-step sampler as one ONNX graph with manifest.json and reference.safetensors.
    Export(ExportArgs),
    /// Run an exported graph in each runtime and compare with its reference outputs.
    Validate(ValidateArgs),
    /// Train a small teacher on built-in data, sample, export a 4-step sampler, validate it.
    Demo(DemoArgs),
    /// Build a deployment bundle: the exported graph, an engine for one target (through the
    /// engine cache), manifest.json with signature, hashes, parity and latency, and a README.
    Build(BuildArgs),
    /// Deployment bundles: verify one on this machine.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Latency and throughput per batch size: the student's exported graph vs one denoiser call
    /// and the teacher's N-step sampler step by step, in one runtime.
    Bench(BenchArgs),
    /// Time training steps (forward, backward, AdamW, EMA) of a model directory's architecture
    /// at a batch size: ms/step and peak memory (scripts/bench_train_peer.sh adds PyTorch's).
    BenchTrain(BenchTrainArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// model directory whose architecture (config.json) is trained; its dataset feeds the steps
    #[arg(long)]
    pub model: PathBuf,
    /// samples per training step
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// timed steps
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// untimed steps first (allocator and thread pools warm up)
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N (CUDA needs a `--features cuda` build; docs/gpu.md)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// tract (NNEF archive), ort-cpu (ORT-optimised model), ort-cuda, tensorrt
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub out: PathBuf,
    /// unrolled sampler steps (default: the model's)
    #[arg(long)]
    pub steps: Option<usize>,
    /// fp32 or fp16 (see `export --precision`)
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// engine cache (default $XDG_CACHE_HOME/flashctl/engines or ~/.cache/flashctl/engines)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// timed runs for the latency recorded in the manifest
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Re-check every file's sha256 against manifest.json (exit 1 naming a tampered file), then
    /// re-run each engine's parity on this machine.
    Verify(BundleVerifyArgs),
}

#[derive(Args, Debug)]
pub struct BundleVerifyArgs {
    pub bundle: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// the student (or any model) whose exported sampler graph is benchmarked
    #[arg(long)]
    pub model: PathBuf,
    /// a teacher to compare against, run step by step
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    pub teacher_steps: usize,
    /// tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// batch sizes, comma separated
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    pub batch: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// where bench.json and latency.png go
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// fp32 or fp16 for every exported graph (see `export --precision`)
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// print the JSON report instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum PairsCommand {
    /// Write the teacher's DDIM (x_T, x_0[, class_label]) pairs as sharded safetensors plus
    /// index.json; rerun with the same arguments to resume.
    Generate(PairsGenerateArgs),
}

#[derive(Args, Debug)]
pub struct PairsGenerateArgs {
    /// model directory (flashctl or diffusers) or an ONNX teacher (NAME.onnx + NAME.teacher.json)
    #[arg(long)]
    pub teacher: PathBuf,
    /// number of pairs
    #[arg(long)]
    pub count: usize,
    /// teacher DDIM steps
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// pairs per shard
    #[arg(long, default_value_t = 1024)]
    pub shard_size: usize,
    /// teacher batch (default 1024 for 2-D data, 64 for images)
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub teacher_runtime: String,
    /// cpu, cuda or cuda:N: where a model-directory teacher runs
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Subcommand, Debug)]
pub enum TeacherCommand {
    /// Train a teacher (DDPM loss, AdamW, EMA, atomic checkpoints).
    Train(TrainArgs),
    /// One denoiser call: `x` [B,C,H,W], `t` [B] and optional `class_labels` [B] from --inputs,
    /// `denoiser_out` to --out.
    Run(TeacherRunArgs),
}

#[derive(Args, Debug)]
pub struct TeacherRunArgs {
    /// model directory (flashctl or diffusers) or an ONNX teacher (NAME.onnx + NAME.teacher.json)
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// checkerboard, gaussian-mixture, two-moons, fashion-mnist, or a folder of PNGs
    #[arg(long)]
    pub dataset: String,
    #[arg(long)]
    pub out: PathBuf,
    /// tiny (tests), small (default), base
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// iterations (default: the preset's)
    #[arg(long)]
    pub iters: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// continue from the checkpoint in --out
    #[arg(long)]
    pub resume: bool,
    /// Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// side length PNG-folder images are resized to
    #[arg(long)]
    pub image_size: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// stop after this many seconds of training, with a checkpoint (continue with --resume)
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
    /// cpu, cuda or cuda:N (CUDA needs a `--features cuda` build; docs/gpu.md)
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// model directory (flashctl or diffusers) or an ONNX teacher (NAME.onnx + NAME.teacher.json)
    #[arg(long)]
    pub model: PathBuf,
    /// start from `x_T` (and `class_labels`) in this safetensors file instead of seeded noise
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// sampler steps (default: the model's)
    #[arg(long)]
    pub steps: Option<usize>,
    /// ddim or euler
    #[arg(long)]
    pub sampler: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// PNG to write (default MODEL/samples.png for seeded runs of a model directory)
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// also write the raw samples (`sample`) to this safetensors file
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where candle samples a model directory
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// unrolled sampler steps (default: the model's)
    #[arg(long)]
    pub steps: Option<usize>,
    /// ddim or euler
    #[arg(long)]
    pub sampler: Option<String>,
    /// export one denoiser call (inputs x, t, class_labels; output denoiser_out) with the
    /// NAME.teacher.json sidecar that makes it usable as an ONNX teacher
    #[arg(long)]
    pub denoiser_only: bool,
    /// fp32, or fp16: the denoiser computes in float16 (weights stored as fp16), the sampler
    /// arithmetic, norm statistics, softmax and timestep embedding stay fp32; inputs and
    /// outputs stay fp32 and the reference is the fp32 eager output
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    pub graph: PathBuf,
    /// reference inputs/outputs (default: reference.safetensors beside the graph)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// runtimes to check, comma separated: tract, ort-cpu, ort-cuda, ort-tensorrt, candle (the
    /// eager reference rerun from the export's model directory)
    #[arg(long, default_value = "tract,ort-cpu", value_delimiter = ',')]
    pub runtimes: Vec<String>,
    /// named tolerance level: exact, close, approximate, very-approximate, at the export's
    /// precision (default fp32: atol 1e-4, rtol 0; fp16: approximate, atol = rtol = 1e-2)
    #[arg(long)]
    pub tolerance: Option<String>,
    /// absolute tolerance overriding the level's: `A` for every output, `NAME=A` for one
    /// output (repeatable)
    #[arg(long)]
    pub atol: Vec<String>,
    /// relative tolerance overriding the level's: `R` or `NAME=R` (repeatable)
    #[arg(long)]
    pub rtol: Vec<String>,
    /// timed runs per runtime after the parity run
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// deployment target whose op/opset allow-list the graph must meet before any runtime
    /// runs: generic, tensorrt10, ort-mobile (exit 2 naming each refused op)
    #[arg(long)]
    pub target: Option<String>,
    /// on a parity failure, expose every intermediate value, rerun the failing runtime and
    /// print the first node whose output leaves the eager path (needs the export's manifest
    /// and model directory)
    #[arg(long)]
    pub bisect: bool,
    /// also compare with the golden outputs stored in DIR (STEM.safetensors for STEM.onnx)
    #[arg(long, value_name = "DIR")]
    pub golden: Option<PathBuf>,
    /// write the reference as the golden of this graph into --golden DIR, then exit
    #[arg(long)]
    pub update_golden: bool,
    /// a requested runtime that cannot load is reported as unavailable but does not fail the
    /// run (at least one runtime must still run and pass)
    #[arg(long)]
    pub allow_missing: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    #[arg(long, default_value = "checkerboard")]
    pub dataset: String,
    #[arg(long)]
    pub iters: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct DistillArgs {
    /// imagine-flash (online, needs --teacher) or kdm (offline, needs --pairs)
    #[arg(long, default_value = "imagine-flash")]
    pub method: String,
    /// model directory (flashctl or diffusers) or an ONNX teacher (NAME.onnx + NAME.teacher.json)
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// kdm: a directory written by `flashctl pairs generate`
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// kdm: Koopman operator, dense (Linear n x n) or eigen (P L P^-1, stable eigenvalues)
    #[arg(long, default_value = "dense")]
    pub koopman: String,
    /// kdm: add the non-saturating adversarial term with a small discriminator
    #[arg(long)]
    pub adversarial: bool,
    /// kdm: weight of the adversarial term
    #[arg(long, default_value_t = 0.01)]
    pub adversarial_weight: f64,
    /// kdm: std of the Gaussian noise on both latents during training
    #[arg(long, default_value_t = 0.4)]
    pub latent_noise: f64,
    /// kdm: reconstruction distance, l2 or pseudo-huber[:C] (C default 0.03)
    #[arg(long, default_value = "l2")]
    pub recon: String,
    /// kdm: weight of |P^-1 P - I|^2 for --koopman eigen
    #[arg(long, default_value_t = 1.0)]
    pub inverse_weight: f64,
    /// student sampler steps (1-8)
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// iterations (default 2000 for 2-D data, 300 for images)
    #[arg(long)]
    pub iters: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// backward (student's own no-grad steps) or forward (noised training data)
    #[arg(long, default_value = "backward")]
    pub inputs: String,
    /// srl (shifted reconstruction), trajectory (teacher's DDIM solution), or auto: the measured
    /// recommendation (trajectory for 1 step, srl for more; docs/results.md)
    #[arg(long, default_value = "auto")]
    pub loss: String,
    /// on or off
    #[arg(long, default_value = "on")]
    pub noise_correction: String,
    /// SRL timestep shift: identity, power:G, offset:D, scale:C, const:S, or auto (scale:0.25 for
    /// 1 step, power:2 for more; docs/results.md)
    #[arg(long, default_value = "auto")]
    pub tau: String,
    /// SRL re-noising: fresh (new noise) or implied (the noise of the student's own state)
    #[arg(long, default_value = "implied")]
    pub srl_noise: String,
    /// teacher DDIM steps of the trajectory target
    #[arg(long, default_value_t = 32)]
    pub teacher_steps: usize,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// stop after this many seconds of training, with a checkpoint (continue with --resume)
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
    /// continue from the checkpoint in --out
    #[arg(long)]
    pub resume: bool,
    /// training data (needed for --inputs forward; default: the teacher's dataset)
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// train a fresh student of this preset (tiny, small, base) instead of starting from the
    /// teacher's weights (required for ONNX teachers); kdm: the generator's size (default small)
    #[arg(long)]
    pub student_preset: Option<String>,
    /// runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub teacher_runtime: String,
    /// cpu, cuda or cuda:N: where the student trains and a model-directory teacher runs
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// model directory (teacher or student) or an ONNX teacher
    #[arg(long)]
    pub model: PathBuf,
    /// sampler steps (default: the model's; a student runs its own)
    #[arg(long)]
    pub steps: Option<usize>,
    /// checkerboard, gaussian-mixture, two-moons or fashion-mnist (its test split)
    #[arg(long)]
    pub dataset: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// also sample this teacher on the same noise: its metrics, psnr_vs_teacher, side-by-side PNG
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    pub teacher_steps: usize,
    /// folder for PNGs (default MODEL/eval)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// runtime for ONNX teachers
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// feature network folder (default fixtures/featurenet)
    #[arg(long)]
    pub featurenet: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where candle samples and the feature network runs
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum FeaturenetCommand {
    /// Train the Fashion-MNIST classifier whose features FD-FMNIST uses.
    Train(FeaturenetTrainArgs),
}

#[derive(Args, Debug)]
pub struct FeaturenetTrainArgs {
    #[arg(long, default_value = "fixtures/featurenet")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3000)]
    pub iters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}
