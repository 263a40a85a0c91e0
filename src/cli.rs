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

/// Parses a command line (program name first) as `main` does, with `DistillArgs::given` filled
/// from the flags the line names (the demo runs its stages through this too).
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Distill(a), Some(("distill", m))) = (&mut cli.command, matches.subcommand()) {
        a.given = m
            .ids()
            .filter(|id| {
                m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.to_string())
            .collect();
    }
    Ok(cli)
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
    /// (nothing is written into it)
    #[arg(long)]
    pub model: PathBuf,
    /// samples per training step
    #[arg(long, default_value_t = 32, value_parser = range::positive)]
    pub batch: usize,
    /// timed steps
    #[arg(long, default_value_t = 10, value_parser = range::positive)]
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
    /// model directory (teacher or student) whose sampler the bundle ships
    #[arg(long)]
    pub model: PathBuf,
    /// engine to build: tract (NNEF archive), ort-cpu (ORT-optimised model), ort-cuda,
    /// ort-tensorrt (`tensorrt` is accepted too)
    #[arg(long)]
    pub target: String,
    /// bundle directory to create (new or empty; --force replaces an earlier bundle)
    #[arg(long)]
    pub out: PathBuf,
    /// replace what --out already holds (only if flashctl wrote it)
    #[arg(long)]
    pub force: bool,
    /// unrolled sampler steps (default: the model's)
    #[arg(long, value_parser = range::positive)]
    pub steps: Option<usize>,
    /// fp32 or fp16 (see `export --precision`)
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// engine cache (default $XDG_CACHE_HOME/flashctl/engines or ~/.cache/flashctl/engines)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// timed runs for the latency recorded in the manifest
    #[arg(long, default_value_t = 20, value_parser = range::positive)]
    pub runs: usize,
    /// print the manifest as JSON
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
    /// bundle directory written by `flashctl build`
    pub bundle: PathBuf,
    /// timed runs per engine
    #[arg(long, default_value_t = 10, value_parser = range::positive)]
    pub runs: usize,
    /// print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// the student (or any model) whose exported sampler graph is benchmarked
    #[arg(long)]
    pub model: PathBuf,
    /// sampler steps of --model's graph (default: the model's own; a teacher can be benchmarked
    /// at any count, a distilled student only at its own)
    #[arg(long, value_parser = range::positive)]
    pub steps: Option<usize>,
    /// a teacher to compare against, run step by step
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// the teacher's DDIM steps
    #[arg(long, default_value_t = 50, value_parser = range::positive)]
    pub teacher_steps: usize,
    /// tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// batch sizes, comma separated
    #[arg(long, default_value = "1,8,64", value_delimiter = ',', value_parser = range::positive)]
    pub batch: Vec<usize>,
    /// untimed runs per batch size first
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// timed runs per batch size
    #[arg(long, default_value_t = 20, value_parser = range::positive)]
    pub runs: usize,
    /// folder for bench.json and latency.png (default: nothing written, the report is printed)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// fp32 or fp16 for every exported graph (see `export --precision`)
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// lowering of flashctl's graphs (see `export --target`; default: generic)
    #[arg(long, default_value = "generic")]
    pub target: String,
    /// another ONNX graph of the same model (torch.onnx's export, ...), checked to compute the
    /// same function and timed interleaved with flashctl's in the same runtime: one denoiser
    /// call when it takes a timestep, else the whole sampler
    #[arg(long)]
    pub against: Option<PathBuf>,
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
    #[arg(long, value_parser = range::positive)]
    pub count: usize,
    /// teacher DDIM steps
    #[arg(long, default_value_t = 50, value_parser = range::positive)]
    pub steps: usize,
    /// pairs directory (new, empty, or an interrupted run with the same arguments, which is
    /// resumed; --force replaces a different one)
    #[arg(long)]
    pub out: PathBuf,
    /// replace what --out holds when it is another pairs run
    #[arg(long)]
    pub force: bool,
    /// pairs per shard
    #[arg(long, default_value_t = 1024, value_parser = range::positive)]
    pub shard_size: usize,
    /// teacher batch (default 1024 for 2-D data, 64 for images)
    #[arg(long, value_parser = range::positive)]
    pub batch: Option<usize>,
    /// seed of the noise x_T
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
    /// safetensors file with `x`, `t` and optional `class_labels`
    #[arg(long)]
    pub inputs: PathBuf,
    /// safetensors file to write `denoiser_out` to
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
    /// model directory to create (new or empty; --force replaces an earlier model, --resume
    /// continues it)
    #[arg(long)]
    pub out: PathBuf,
    /// replace what --out already holds (only if flashctl wrote it)
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// tiny (tests), small (default), base
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// iterations (default: the preset's)
    #[arg(long, value_parser = range::positive)]
    pub iters: Option<usize>,
    /// seed of the initial weights and of every batch
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// samples per iteration (default: the preset's)
    #[arg(long, value_parser = range::positive)]
    pub batch: Option<usize>,
    /// AdamW learning rate (default: the preset's)
    #[arg(long, value_parser = range::positive_number, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// continue the run in --out from its last checkpoint; every option that shapes the result
    /// must be the run's own (--iters may grow)
    #[arg(long)]
    pub resume: bool,
    /// Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// side length PNG-folder images are resized to
    #[arg(long, value_parser = range::positive)]
    pub image_size: Option<usize>,
    /// iterations between checkpoints (default: the preset's)
    #[arg(long, value_parser = range::positive)]
    pub checkpoint_every: Option<usize>,
    /// stop after this many seconds of training, with a checkpoint (continue with --resume)
    #[arg(long, value_name = "SECONDS", value_parser = range::non_negative_number, allow_hyphen_values = true)]
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
    /// start from `noise` (and `class_labels`) in this safetensors file instead of seeded noise
    /// (`x_T` is read too)
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// sampler steps (default: the model's)
    #[arg(long, value_parser = range::positive)]
    pub steps: Option<usize>,
    /// ddim or euler
    #[arg(long)]
    pub sampler: Option<String>,
    /// samples to draw from seeded noise
    #[arg(long, default_value_t = 64, value_parser = range::positive)]
    pub count: usize,
    /// seed of the noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// PNG to write: a scatter (2-D) or an image grid
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// safetensors file to write the raw samples (`image`) to
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where candle samples a model directory
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// text-to-image pipelines: a prompt, one sample each (repeat the flag for more)
    #[arg(long)]
    pub prompt: Vec<String>,
    /// text-to-image pipelines: the negative prompt of classifier-free guidance (default "")
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// text-to-image pipelines: classifier-free guidance scale (default 7.5; 1 = none)
    #[arg(long)]
    pub guidance_scale: Option<f32>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// model directory (teacher or student)
    #[arg(long)]
    pub model: PathBuf,
    /// unrolled sampler steps (default: the model's)
    #[arg(long, value_parser = range::positive)]
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
    /// the runtime the graph is lowered for: generic (composites every runtime takes), tract,
    /// ort-cpu / ort-cuda (group norms as InstanceNormalization), tensorrt10, ort-mobile; the
    /// lowered graph must pass the target's allow-list (see `validate --target`)
    #[arg(long, default_value = "generic")]
    pub target: String,
    /// default-domain opset, 13-21 (default: 17; 15 for --target ort-mobile)
    #[arg(long)]
    pub opset: Option<i64>,
    /// classifier-free guidance of a text-to-image pipeline export (`--model` a
    /// StableDiffusionPipeline folder; default 7.5, 1 = no guidance)
    #[arg(long)]
    pub guidance_scale: Option<f32>,
    /// text-to-image pipelines: the text encoder, one UNet call and the VAE decoder as three
    /// graphs (folders text_encoder/, unet/, vae_decoder/ beside --out) instead of one
    #[arg(long)]
    pub components: bool,
    /// graph file to write (DIR/NAME.onnx); manifest.json and reference.safetensors go beside it
    #[arg(long)]
    pub out: PathBuf,
    /// replace an earlier export of the same graph in that directory
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// exported graph (with manifest.json and reference.safetensors beside it)
    pub graph: PathBuf,
    /// reference inputs/outputs (default: reference.safetensors beside the graph)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// runtimes to check, comma separated: tract, ort-cpu, ort-cuda, ort-tensorrt, candle (the
    /// eager reference rerun from the export's model directory); default: what this machine has
    /// (tract, and ort-cpu when ONNX Runtime is found). A runtime named here must load.
    #[arg(long, value_delimiter = ',')]
    pub runtimes: Option<Vec<String>>,
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
    /// runs: generic, tract, ort-cpu, ort-cuda, ort-tensorrt (= tensorrt10), ort-mobile (exit 2
    /// naming each refused op)
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
    /// print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// also write the report as JUnit XML (one test case per runtime x output) to FILE, for CI
    /// systems that show test reports natively
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// folder the demo writes (its own: rerunning replaces it)
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// built-in dataset of the teacher (`fashion-mnist` runs the image version)
    #[arg(long, default_value = "checkerboard")]
    pub dataset: String,
    /// folder of the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// teacher iterations (default: the small preset's)
    #[arg(long, value_parser = range::positive)]
    pub iters: Option<usize>,
    /// seed of the teacher
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// where trained teachers are kept between demos (one per dataset, iterations, seed)
    #[arg(long, default_value = "runs/cache")]
    pub cache: PathBuf,
    /// iterations of each student (default: each method's)
    #[arg(long, value_parser = range::positive)]
    pub student_iters: Option<usize>,
    /// teacher pairs KDM trains on (default: 20000 for 2-D data, 2048 for images)
    #[arg(long, value_parser = range::positive)]
    pub pairs: Option<usize>,
    /// samples per model in the quality comparison (default: 20000 for 2-D data, 1000 for
    /// images)
    #[arg(long, value_parser = range::eval_count)]
    pub count: Option<usize>,
    /// timed runs per batch size in the speed comparison
    #[arg(long, default_value_t = 10, value_parser = range::positive)]
    pub runs: usize,
}

/// `distill` options that belong to one method only: naming one with the other method is
/// refused (see `DistillArgs::given`).
pub const KDM_ONLY: &[&str] = &[
    "pairs",
    "koopman",
    "latent_noise",
    "recon",
    "inverse_weight",
];
pub const IMAGINE_FLASH_ONLY: &[&str] = &[
    "teacher",
    "steps",
    "inputs",
    "loss",
    "noise_correction",
    "tau",
    "srl_noise",
    "teacher_steps",
    "dataset",
    "data_dir",
    "teacher_runtime",
];

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
    /// add the non-saturating adversarial term with a small discriminator (kdm: against the
    /// pairs' x_0; imagine-flash: the student's final outputs against the data set's samples)
    #[arg(long)]
    pub adversarial: bool,
    /// weight of the adversarial term
    #[arg(long, default_value_t = 0.01, value_parser = range::non_negative_number, allow_hyphen_values = true)]
    pub adversarial_weight: f64,
    /// kdm: std of the Gaussian noise on both latents during training
    #[arg(long, default_value_t = 0.4, value_parser = range::non_negative_number, allow_hyphen_values = true)]
    pub latent_noise: f64,
    /// kdm: reconstruction distance, l2 or pseudo-huber[:C] (C default 0.03)
    #[arg(long, default_value = "l2")]
    pub recon: String,
    /// kdm: weight of |P^-1 P - I|^2 for --koopman eigen
    #[arg(long, default_value_t = 1.0, value_parser = range::non_negative_number, allow_hyphen_values = true)]
    pub inverse_weight: f64,
    /// imagine-flash: student sampler steps (1-8)
    #[arg(long, default_value_t = 3, value_parser = range::student_steps)]
    pub steps: usize,
    /// student directory to create (new or empty; --force replaces an earlier one, --resume
    /// continues it)
    #[arg(long)]
    pub out: PathBuf,
    /// replace what --out already holds (only if flashctl wrote it)
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// iterations (default 2000 for 2-D data, 300 for images)
    #[arg(long, value_parser = range::positive)]
    pub iters: Option<usize>,
    /// seed of the student's training (initial weights of fresh parts, noise, batches)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// imagine-flash: backward (student's own no-grad steps) or forward (noised training data)
    #[arg(long, default_value = "backward")]
    pub inputs: String,
    /// imagine-flash: srl (shifted reconstruction), trajectory (teacher's DDIM solution from the
    /// state), segment (teacher's ODE over the step's own segment t_i -> t_i+1), or auto: the
    /// measured recommendation (trajectory for 1 step, segment for more; docs/results.md)
    #[arg(long, default_value = "auto")]
    pub loss: String,
    /// imagine-flash: noise correction on or off
    #[arg(long, default_value = "on")]
    pub noise_correction: String,
    /// imagine-flash: SRL timestep shift: identity, power:G, offset:D, scale:C, const:S, or
    /// auto (scale:0.25 for 1 step, power:2 for more; docs/results.md)
    #[arg(long, default_value = "auto")]
    pub tau: String,
    /// imagine-flash: SRL re-noising: fresh (new noise) or implied (the noise of the student's
    /// own state)
    #[arg(long, default_value = "implied")]
    pub srl_noise: String,
    /// imagine-flash: teacher DDIM steps of the target: the trajectory solution, each segment's
    /// (scaled by its share of the schedule), and SRL's k-step solve from the shifted point (1:
    /// one teacher x0 prediction there)
    #[arg(long, default_value_t = 32, value_parser = range::positive)]
    pub teacher_steps: usize,
    /// samples per iteration (default: the method's)
    #[arg(long, value_parser = range::positive)]
    pub batch: Option<usize>,
    /// AdamW learning rate (default: the method's)
    #[arg(long, value_parser = range::positive_number, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// iterations between checkpoints
    #[arg(long, value_parser = range::positive)]
    pub checkpoint_every: Option<usize>,
    /// stop after this many seconds of training, with a checkpoint (continue with --resume)
    #[arg(long, value_name = "SECONDS", value_parser = range::non_negative_number, allow_hyphen_values = true)]
    pub time_budget: Option<f64>,
    /// continue the run in --out from its last checkpoint; every option that shapes the result
    /// must be the run's own (--iters may grow)
    #[arg(long)]
    pub resume: bool,
    /// imagine-flash: training data (needed for --inputs forward; default: the teacher's dataset)
    #[arg(long)]
    pub dataset: Option<String>,
    /// imagine-flash: Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// train a fresh student of this preset (tiny, small, base) instead of starting from the
    /// teacher's weights (required for ONNX teachers); kdm: the generator's size (default small)
    #[arg(long, alias = "student-preset")]
    pub preset: Option<String>,
    /// imagine-flash: runtime for an ONNX teacher: tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub teacher_runtime: String,
    /// cpu, cuda or cuda:N: where the student trains and a model-directory teacher runs
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The options named on the command line (filled by the parser's caller from clap's value
    /// sources): options of the other method are refused by name.
    #[arg(skip)]
    pub given: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// model directory (teacher or student) or an ONNX teacher
    #[arg(long)]
    pub model: PathBuf,
    /// sampler steps (default: the model's; a student runs its own)
    #[arg(long, value_parser = range::positive)]
    pub steps: Option<usize>,
    /// checkerboard, gaussian-mixture, two-moons or fashion-mnist (its test split)
    #[arg(long)]
    pub dataset: String,
    /// Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// samples drawn from the model (and the teacher), at least 10
    #[arg(long, alias = "samples", default_value_t = 2000, value_parser = range::eval_count)]
    pub count: usize,
    /// seed of the noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// also sample this teacher on the same noise: its metrics, psnr_vs_teacher, side-by-side PNG
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// the teacher's sampler steps
    #[arg(long, default_value_t = 50, value_parser = range::positive)]
    pub teacher_steps: usize,
    /// also each step's error against the teacher's ODE from the student's own state (x0, and
    /// next state over the step's segment): which step breaks (needs --teacher)
    #[arg(long)]
    pub per_step: bool,
    /// folder for eval.json and the PNGs (default: nothing written, the report is printed)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// runtime for ONNX models (--model or --teacher): tract, ort-cpu, ort-cuda
    #[arg(long, default_value = "tract")]
    pub runtime: String,
    /// feature network folder (default fixtures/featurenet)
    #[arg(long)]
    pub featurenet: Option<PathBuf>,
    /// cpu, cuda or cuda:N: where candle samples and the feature network runs
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// print the report as JSON
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
    /// folder to write the network to (new or empty; --force replaces an earlier one)
    #[arg(long)]
    pub out: PathBuf,
    /// replace what --out already holds (only if flashctl wrote it)
    #[arg(long)]
    pub force: bool,
    /// iterations
    #[arg(long, default_value_t = 3000, value_parser = range::positive)]
    pub iters: usize,
    /// seed of the weights and batches
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Range checks at parse time, so a nonsense number is refused with one line before anything
/// runs (the messages say the valid range in words).
pub mod range {
    fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("expected {what}, got `{s}`"))
    }

    /// An integer >= 1 (iterations, batch sizes, counts, steps, runs).
    pub fn positive(s: &str) -> Result<usize, String> {
        match parse::<usize>(s, "a whole number >= 1")? {
            0 => Err("must be at least 1".into()),
            n => Ok(n),
        }
    }

    /// Student sampler steps: 1 to 8.
    pub fn student_steps(s: &str) -> Result<usize, String> {
        match parse::<usize>(s, "a whole number from 1 to 8")? {
            n @ 1..=8 => Ok(n),
            _ => Err("a student takes 1 to 8 steps".into()),
        }
    }

    /// A finite number > 0 (learning rates).
    pub fn positive_number(s: &str) -> Result<f64, String> {
        match parse::<f64>(s, "a number > 0")? {
            v if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err("must be a number > 0".into()),
        }
    }

    /// A finite number >= 0 (loss weights, noise levels, seconds).
    pub fn non_negative_number(s: &str) -> Result<f64, String> {
        match parse::<f64>(s, "a number >= 0")? {
            v if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err("must be a number >= 0".into()),
        }
    }

    /// Evaluation sample counts: at least 10 (the metrics need a spread).
    pub fn eval_count(s: &str) -> Result<usize, String> {
        match parse::<usize>(s, "a whole number >= 10")? {
            n if n >= 10 => Ok(n),
            _ => Err("must be at least 10 (the metrics need a spread of samples)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_command_has_help_text() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() && s.get_name() != "help" {
                    missing.push(format!("{path} {} (command)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = vec![];
        walk(&cli, "flashctl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn ranges_are_stated_in_words() {
        assert_eq!(range::positive("0").unwrap_err(), "must be at least 1");
        assert!(range::positive("x").unwrap_err().contains("whole number"));
        assert_eq!(range::positive("3"), Ok(3));
        assert!(range::student_steps("9").is_err());
        assert!(range::positive_number("nan").is_err());
        assert!(range::positive_number("0").is_err());
        assert!(range::non_negative_number("-1").is_err());
        assert_eq!(range::non_negative_number("0"), Ok(0.0));
        assert!(range::eval_count("9").is_err());
    }
}
