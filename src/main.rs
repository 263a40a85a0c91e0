use flashctl::cli::{Cli, Command, TeacherCommand};
use flashctl::sampler::SamplerKind;
use flashctl::validation::BadInput;
use flashctl::{demo, export, sample, train, validation};
use flashctl_validate::Tolerance;
use std::process::ExitCode;

/// Outcome of a command that ran to completion: pass (0) or a parity failure (1).
enum Outcome {
    Ok,
    ParityFailure,
}

fn parse_sampler(s: &Option<String>) -> anyhow::Result<Option<SamplerKind>> {
    s.as_deref()
        .map(|s| s.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .transpose()
}

/// One line on training speed (what the GPU peers are compared on), and on a time-budget stop.
fn print_throughput(r: &train::TrainReport) {
    if r.iters_done < r.iters {
        println!(
            "stopped by --time-budget after {} of {} iterations (checkpoint saved; continue with --resume)",
            r.iters_done, r.iters
        );
    }
    if r.iters_run > 0 {
        println!(
            "{} iters on {} in {:.1} s: {:.2} ms/iter",
            r.iters_run,
            r.device,
            r.loop_seconds,
            r.loop_seconds * 1e3 / r.iters_run as f64
        );
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Teacher(TeacherCommand::Train(a)) => {
            let r = train::run_command(&a, true)?;
            println!(
                "trained {} iters: loss first {:.4}, final (mean of last 50) {:.4} -> {}",
                r.iters_done,
                r.first_loss,
                r.final_loss,
                r.out_dir.display()
            );
            print_throughput(&r);
            Ok(Outcome::Ok)
        }
        Command::BenchTrain(a) => {
            let r = flashctl::bench_train::run(&flashctl::bench_train::BenchTrainOptions {
                model: a.model.clone(),
                batch: a.batch,
                steps: a.steps,
                warmup: a.warmup,
                data_dir: a.data_dir.clone(),
                device: flashctl::device::open(&a.device)?,
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                flashctl::bench_train::print_report(&r);
            }
            Ok(Outcome::Ok)
        }
        Command::Eval(a) => {
            let r = flashctl::eval::eval(&flashctl::eval::EvalOptions {
                model: a.model.clone(),
                steps: a.steps,
                dataset: a.dataset.clone(),
                data_dir: a.data_dir.clone(),
                count: a.count,
                seed: a.seed,
                teacher: a.teacher.clone(),
                teacher_steps: a.teacher_steps,
                out: a.out.clone(),
                runtime: a.runtime.clone(),
                featurenet: a.featurenet.clone(),
                device: flashctl::device::open(&a.device)?,
                per_step: a.per_step,
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                flashctl::eval::print_report(&r);
            }
            Ok(Outcome::Ok)
        }
        Command::Featurenet(flashctl::cli::FeaturenetCommand::Train(a)) => {
            flashctl::out_dir::prepare(
                &a.out,
                "--out",
                flashctl::out_dir::Existing::from_flags(a.force, false),
            )?;
            let info =
                flashctl::eval::featurenet::train(a.data_dir.as_deref(), &a.out, a.iters, a.seed)?;
            println!(
                "featurenet: {} iters, test accuracy {:.4} -> {}",
                info.iters,
                info.test_accuracy,
                a.out.display()
            );
            Ok(Outcome::Ok)
        }
        Command::Pairs(flashctl::cli::PairsCommand::Generate(a)) => {
            let r = flashctl::pairs::run(&a)?;
            println!(
                "pairs: {} in {} shards ({} written, {} already there) in {:.1} s -> {}",
                r.pairs,
                r.shards_written + r.shards_reused,
                r.shards_written,
                r.shards_reused,
                r.seconds,
                a.out.display()
            );
            Ok(Outcome::Ok)
        }
        Command::Distill(a) => {
            let r = flashctl::distill::command::run(&a)?;
            println!(
                "distilled {} iters: loss first {:.5}, final (mean of last 50) {:.5} -> {}",
                r.iters_done,
                r.first_loss,
                r.final_loss,
                r.out_dir.display()
            );
            print_throughput(&r);
            Ok(Outcome::Ok)
        }
        Command::Teacher(TeacherCommand::Run(a)) => {
            let y = if flashctl::sd::pipeline::is_pipeline_dir(&a.model) {
                flashctl::sd::run::teacher_run(&a.model, &a.inputs, &a.out)?
            } else {
                sample::teacher_run(&a.model, &a.inputs, &a.out, &a.runtime)?
            };
            println!("denoiser_out {:?} -> {}", y.dims(), a.out.display());
            Ok(Outcome::Ok)
        }
        Command::Sample(a) => {
            if a.count == 0 {
                return Err(
                    BadInput("--count 0: nothing to sample (give at least 1)".into()).into(),
                );
            }
            let start = match &a.inputs {
                Some(p) => sample::Start::File(p),
                None => sample::Start::Seeded {
                    count: a.count,
                    seed: a.seed,
                },
            };
            if a.png.is_none() && a.out.is_none() {
                return Err(BadInput(
                    "nothing to write: give --png FILE (picture) and/or --out FILE (raw samples)"
                        .into(),
                )
                .into());
            }
            let is_pipeline = flashctl::sd::pipeline::is_pipeline_dir(&a.model);
            let text_flags =
                !a.prompt.is_empty() || a.negative_prompt.is_some() || a.guidance_scale.is_some();
            if text_flags && !is_pipeline {
                return Err(BadInput(
                    "--prompt/--negative-prompt/--guidance-scale are for text-to-image pipeline \
                     folders (model_index.json)"
                        .into(),
                )
                .into());
            }
            if is_pipeline {
                if a.sampler.is_some() {
                    return Err(BadInput(
                        "a pipeline samples with its DDIM scheduler: no --sampler".into(),
                    )
                    .into());
                }
                let t0 = std::time::Instant::now();
                let r = flashctl::sd::run::sample(
                    &a.model,
                    &flashctl::sd::run::PromptInputs {
                        prompts: &a.prompt,
                        negative_prompt: a.negative_prompt.as_deref(),
                        inputs: a.inputs.as_deref(),
                        seed: a.seed,
                        guidance: a
                            .guidance_scale
                            .unwrap_or(flashctl::sd::export::DEFAULT_GUIDANCE),
                        steps: a.steps,
                    },
                )?;
                if let Some(png) = &a.png {
                    sample::write_png(&r.image, png)?;
                    println!("png -> {}", png.display());
                }
                if let Some(out) = &a.out {
                    let mut m = std::collections::HashMap::new();
                    m.insert("sample".to_string(), r.latents.clone());
                    m.insert("image".to_string(), r.image.clone());
                    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                        flashctl::fsx::create_dir_all(dir)?;
                    }
                    flashctl::checkpoint::save_tensors(out, &m)?;
                    println!("sample (latents), image -> {}", out.display());
                }
                println!(
                    "sampled {} x {}-step text-to-image in {:.2}s",
                    r.image.dims()[0],
                    r.steps,
                    t0.elapsed().as_secs_f64()
                );
                return Ok(Outcome::Ok);
            }
            let png = a.png.clone();
            let device = flashctl::device::open(&a.device)?;
            let r = sample::sample(
                &a.model,
                &sample::SampleOptions {
                    steps: a.steps,
                    kind: parse_sampler(&a.sampler)?,
                    start,
                    png: png.as_deref(),
                    out: a.out.as_deref(),
                    runtime: &a.runtime,
                    device: &device,
                },
            )?;
            println!(
                "sampled {} x {}-step in {:.2}s",
                r.count, r.steps, r.seconds
            );
            if let Some(p) = r.png {
                println!("png -> {}", p.display());
            }
            if let Some(t) = r.tensor {
                println!("raw samples -> {}", t.display());
            }
            Ok(Outcome::Ok)
        }
        Command::Export(a) => {
            let form = export::GraphForm {
                precision: a.precision.parse().map_err(BadInput)?,
                target: a.target.parse().map_err(BadInput)?,
                opset: a.opset,
            };
            let is_pipeline = flashctl::sd::pipeline::is_pipeline_dir(&a.model);
            if (a.guidance_scale.is_some() || a.components) && !is_pipeline {
                return Err(BadInput(
                    "--guidance-scale/--components are for text-to-image pipeline folders \
                     (model_index.json)"
                        .into(),
                )
                .into());
            }
            let r = if is_pipeline {
                if a.denoiser_only || a.sampler.is_some() {
                    return Err(BadInput(
                        "a pipeline folder exports its whole text-to-image graph: no \
                         --denoiser-only/--sampler"
                            .into(),
                    )
                    .into());
                }
                if a.components {
                    if a.steps.is_some() || a.guidance_scale.is_some() {
                        return Err(BadInput(
                            "--components exports one UNet call: no --steps/--guidance-scale"
                                .into(),
                        )
                        .into());
                    }
                    let root = a.out.parent().unwrap_or(std::path::Path::new("."));
                    for c in ["text_encoder", "unet", "vae_decoder"] {
                        export::prepare_out(&root.join(c).join("model.onnx"), a.force)?;
                    }
                    for r in flashctl::sd::export::export_components(&a.model, form, &a.out)? {
                        println!(
                            "exported {} ({} nodes, initializers {} B)",
                            r.graph_path.display(),
                            r.node_count,
                            r.initializer_bytes
                        );
                    }
                    return Ok(Outcome::Ok);
                }
                export::prepare_out(&a.out, a.force)?;
                flashctl::sd::export::export_pipeline(
                    &a.model,
                    a.steps,
                    a.guidance_scale
                        .unwrap_or(flashctl::sd::export::DEFAULT_GUIDANCE),
                    form,
                    &a.out,
                )?
            } else if a.denoiser_only {
                if a.steps.is_some() || a.sampler.is_some() {
                    return Err(BadInput(
                        "--denoiser-only exports one call: no --steps/--sampler".into(),
                    )
                    .into());
                }
                export::prepare_out(&a.out, a.force)?;
                export::export_denoiser(&a.model, form, &a.out)?
            } else {
                export::prepare_out(&a.out, a.force)?;
                export::export(&a.model, a.steps, parse_sampler(&a.sampler)?, form, &a.out)?
            };
            println!(
                "exported {} ({} nodes, initializers {} B, denoiser parameters {} B) in {:.2}s",
                r.graph_path.display(),
                r.node_count,
                r.initializer_bytes,
                r.parameter_bytes,
                r.seconds
            );
            if r.lowered_group_norms + r.lowered_upsamples > 0 {
                println!(
                    "lowered for {}: {} group norms as InstanceNormalization, {} 2x upsamplings \
                     as Resize",
                    r.target.name(),
                    r.lowered_group_norms,
                    r.lowered_upsamples
                );
            }
            println!(
                "manifest -> {}\nreference -> {}",
                r.manifest_path.display(),
                r.reference_path.display()
            );
            Ok(Outcome::Ok)
        }
        Command::Validate(a) => {
            let precision = validation::graph_precision(&a.graph);
            let mut tol = match &a.tolerance {
                Some(level) => Tolerance::level(level, &precision).map_err(BadInput)?,
                None => validation::default_tolerance(&precision),
            };
            let (global, per_output) =
                validation::parse_tolerance_flags(&a.atol, &a.rtol).map_err(BadInput)?;
            tol.atol = global.0.unwrap_or(tol.atol);
            tol.rtol = global.1.unwrap_or(tol.rtol);
            let overrides: std::collections::BTreeMap<String, Tolerance> = per_output
                .into_iter()
                .map(|(name, (at, rt))| {
                    let mut t = tol;
                    t.atol = at.unwrap_or(t.atol);
                    t.rtol = rt.unwrap_or(t.rtol);
                    (name, t)
                })
                .collect();
            // the target named, else the one the graph was exported for (its manifest)
            let target = a.target.clone().or_else(|| {
                export::manifest_beside(&a.graph)
                    .ok()
                    .map(|m| m.target)
                    .filter(|t| t != "generic")
            });
            if let Some(t) = &target {
                validation::check_target(&a.graph, t)?;
            }
            if a.update_golden {
                let dir = a
                    .golden
                    .as_deref()
                    .ok_or_else(|| BadInput("--update-golden needs --golden DIR".into()))?;
                let path = validation::update_golden(&a.graph, a.reference.as_deref(), dir)?;
                println!("golden written: {}", path.display());
                return Ok(Outcome::Ok);
            }
            let opts = validation::ValidateOptions {
                tolerance: tol,
                overrides,
                runs: a.runs,
                bisect: a.bisect,
                golden: a.golden.clone(),
            };
            let runtimes = match &a.runtimes {
                Some(r) => r.clone(),
                None => {
                    let r = validation::installed_runtimes();
                    if !a.json {
                        println!(
                            "runtimes: {} (this machine's; --runtimes to name others)",
                            r.join(", ")
                        );
                        if !r.iter().any(|x| x == "ort-cpu") {
                            println!("{}", validation::ORT_NOT_INSTALLED);
                        }
                    }
                    r
                }
            };
            let mut r =
                validation::validate_with(&a.graph, a.reference.as_deref(), &runtimes, &opts)?;
            if a.allow_missing {
                let ran: Vec<&validation::RuntimeReport> = r
                    .runtimes
                    .iter()
                    .filter(|x| x.status != "unavailable")
                    .collect();
                r.passed = !ran.is_empty() && ran.iter().all(|x| x.status == "pass");
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                validation::print_table(&r);
            }
            if let Some(path) = &a.junit {
                flashctl::junit::write(path, &r)?;
            }
            if let Some(x) = r.runtimes.iter().find(|x| x.status == "refused") {
                return Err(BadInput(format!(
                    "{} could not load {}: {}",
                    x.runtime,
                    a.graph.display(),
                    x.reason.as_deref().unwrap_or("no reason given")
                ))
                .into());
            }
            if !a.allow_missing && r.runtimes.iter().any(|x| x.status == "unavailable") {
                return Err(BadInput(
                    "a requested runtime is unavailable (see report; --allow-missing to accept)"
                        .into(),
                )
                .into());
            }
            Ok(if r.passed {
                Outcome::Ok
            } else {
                Outcome::ParityFailure
            })
        }
        Command::Build(a) => {
            let o = flashctl::bundle::BuildOptions {
                model: a.model,
                target: flashctl::bundle::canonical_target(&a.target).to_string(),
                force: a.force,
                out: a.out.clone(),
                steps: a.steps,
                precision: a.precision.parse().map_err(BadInput)?,
                cache_dir: a
                    .cache_dir
                    .unwrap_or_else(flashctl::bundle::default_cache_dir),
                runs: a.runs,
            };
            let m = flashctl::bundle::build(&o)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                let e = &m.engines[0];
                println!(
                    "bundle {} ({} engine, {}; cache {}): parity max abs {:.3e}, p50 {:.3} ms, {} files hashed",
                    a.out.display(),
                    e.target,
                    e.runtime,
                    e.cache,
                    e.parity.iter().fold(0f64, |m, s| m.max(s.max_abs)),
                    e.latency_ms.get("p50").copied().unwrap_or(f64::NAN),
                    m.files.len()
                );
            }
            Ok(Outcome::Ok)
        }
        Command::Bundle(flashctl::cli::BundleCommand::Verify(a)) => {
            let r = flashctl::bundle::verify(&a.bundle, a.runs)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if let Some(t) = &r.tampered {
                println!("bundle verify {}: FAIL: {t}", r.bundle);
            } else {
                for e in &r.engines {
                    println!(
                        "bundle verify {}: {} files ok; {} engine parity {} (max abs {:.3e}) on {}",
                        r.bundle,
                        r.files_checked,
                        e.target,
                        e.status,
                        e.parity.iter().fold(0f64, |m, s| m.max(s.max_abs)),
                        e.device
                    );
                }
            }
            if let Some(t) = &r.tampered {
                eprintln!("error: tampered bundle: {t}");
            }
            Ok(if r.passed {
                Outcome::Ok
            } else {
                Outcome::ParityFailure
            })
        }
        Command::Bench(a) => {
            let r = flashctl::bench::bench(&flashctl::bench::BenchOptions {
                model: a.model,
                steps: a.steps,
                teacher: a.teacher,
                teacher_steps: a.teacher_steps,
                runtime: a.runtime,
                batches: a.batch,
                warmup: a.warmup,
                runs: a.runs,
                out: a.out,
                precision: a.precision.parse().map_err(BadInput)?,
                target: a.target.parse().map_err(BadInput)?,
                against: a.against,
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                flashctl::bench::print(&r);
            }
            Ok(Outcome::Ok)
        }
        Command::Demo(a) => Ok(if demo::run(&a)? {
            Outcome::Ok
        } else {
            Outcome::ParityFailure
        }),
    }
}

/// Keep freed tensor buffers in the heap instead of returning them to the kernel: candle
/// allocates a fresh buffer per op, and glibc's default mmap/munmap of every large buffer made
/// training spend more time zeroing pages than computing (Fashion-MNIST UNet, 21 iterations:
/// 90 s -> 56 s wall, system time 68 s -> 6 s).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Parse the command line; a usage error is one line (clap's first paragraph) and exit 2, help
/// and version print as usual.
fn parse() -> Result<Cli, ExitCode> {
    let usage_error = |e: clap::Error| -> ExitCode {
        use clap::error::ErrorKind::*;
        if matches!(
            e.kind(),
            DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit();
        }
        let text = e.render().to_string();
        let first: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        eprintln!("{}", first.join(" "));
        ExitCode::from(2)
    };
    flashctl::cli::parse_from(std::env::args_os()).map_err(usage_error)
}

fn main() -> ExitCode {
    tune_allocator();
    // `flashctl ... | head` ends quietly when the reader goes, as other command-line tools do,
    // instead of panicking on the broken pipe
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::ParityFailure) => ExitCode::from(1),
        Err(e) => {
            // one line: the chain of causes joined
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::from(2)
        }
    }
}
