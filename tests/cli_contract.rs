//! The CLI contract (docs/cli.md): earlier work is never overwritten without `--force`, a
//! resume must be the run it continues, nonsense numbers and the other method's options are
//! refused by name at parse time, every I/O error names its path, failed commands leave nothing
//! behind, outputs go only where `--out` says, logs show progress, one vocabulary.

mod common;
use common::{fails, flashctl, ok, s};
use std::path::Path;

use common::tiny_teacher_at as teacher;

/// `ok` / `fails` for argument lists built as owned strings.
fn ok_owned(a: &[String]) -> String {
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn fails_owned(a: &[String]) -> (i32, String) {
    fails(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn earlier_work_is_not_overwritten_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "20");
    let weights = std::fs::read(t.join("model.safetensors")).unwrap();
    // teacher over a teacher
    let train_again = |extra: &[&str]| {
        let mut a = vec![
            "teacher",
            "train",
            "--dataset",
            "two-moons",
            "--preset",
            "tiny",
            "--iters",
            "30",
            "--seed",
            "9",
            "--out",
            s(&t),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let args = train_again(&[]);
    let (code, err) = fails_owned(&args);
    assert_eq!(code, 2);
    assert!(
        err.contains("already holds a teacher model") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(t.join("model.safetensors")).unwrap(), weights);

    // a student, then a different student over it: refused; --force replaces it whole
    let student = tmp.path().join("student");
    let distill = |steps: &str, extra: &[&str]| {
        let mut a = vec![
            "distill",
            "--teacher",
            s(&t),
            "--steps",
            steps,
            "--iters",
            "10",
            "--out",
            s(&student),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| ok_owned(&a);
    run(distill("2", &[]));
    std::fs::create_dir_all(student.join("eval")).unwrap();
    let a = distill("1", &[]);
    let (code, err) = fails_owned(&a);
    assert_eq!(code, 2);
    assert!(err.contains("a student model"), "{err}");
    run(distill("1", &["--force"]));
    assert!(
        !student.join("eval").exists(),
        "--force leaves no stale output of the earlier run"
    );
    let config = std::fs::read_to_string(student.join("config.json")).unwrap();
    assert!(config.contains("\"steps\": 1"), "{config}");

    // a teacher into an export directory
    let graph = tmp.path().join("export/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&t),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--preset",
        "tiny",
        "--iters",
        "5",
        "--out",
        s(graph.parent().unwrap()),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("an export"), "{err}");
    // an export over an export, and into a model directory
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&t),
        "--steps",
        "3",
        "--out",
        s(&graph),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("earlier export") && err.contains("--force"),
        "{err}"
    );
    ok(&[
        "export",
        "--model",
        s(&t),
        "--steps",
        "3",
        "--out",
        s(&graph),
        "--force",
    ]);
    let (code, err) = fails(&[
        "export",
        "--model",
        s(&t),
        "--out",
        s(&t.join("model.onnx")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("a teacher model"), "{err}");
    assert!(!t.join("model.onnx").exists());

    // a bundle over a bundle
    let bundle = tmp.path().join("bundle");
    let cache = tmp.path().join("cache");
    let build = |extra: &[&str]| {
        let mut a = vec![
            "build",
            "--model",
            s(&t),
            "--steps",
            "2",
            "--target",
            "tract",
            "--runs",
            "1",
            "--cache-dir",
            s(&cache),
            "--out",
            s(&bundle),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    run(build(&[]));
    let a = build(&[]);
    let (code, err) = fails_owned(&a);
    assert_eq!(code, 2);
    assert!(err.contains("a deployment bundle"), "{err}");
    run(build(&["--force"]));

    // the feature network behind FD-FMNIST (refused before any data is read)
    let fnet = tmp.path().join("featurenet");
    std::fs::create_dir_all(&fnet).unwrap();
    std::fs::write(fnet.join("featurenet.json"), "{}").unwrap();
    let (code, err) = fails(&["featurenet", "train", "--iters", "1", "--out", s(&fnet)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("already holds") && err.contains("--force"),
        "{err}"
    );

    // --force never removes what flashctl did not write
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--preset",
        "tiny",
        "--iters",
        "5",
        "--force",
        "--out",
        s(&home),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing flashctl wrote"), "{err}");
    assert!(home.join("notes.txt").exists());

    // pairs: the same run resumes, another run is refused unless forced
    let pairs = tmp.path().join("pairs");
    let gen = |count: &str, extra: &[&str]| {
        let mut a = vec![
            "pairs",
            "generate",
            "--teacher",
            s(&t),
            "--count",
            count,
            "--steps",
            "2",
            "--out",
            s(&pairs),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    run(gen("16", &[]));
    run(gen("16", &[]));
    let a = gen("32", &[]);
    let (code, err) = fails_owned(&a);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    run(gen("32", &["--force"]));
}

#[test]
fn a_resume_must_be_the_run_it_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "20");
    let resume = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "teacher",
            "train",
            "--dataset",
            "two-moons",
            "--preset",
            "tiny",
            "--iters",
            "30",
            "--resume",
            "--out",
            s(&t),
        ];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect()
    };
    let refused = |extra: &[&str], needle: &str| {
        let a = resume(extra);
        let (code, err) = fails_owned(&a);
        assert_eq!(code, 2, "{a:?}");
        assert!(err.contains(needle), "{a:?}: {err}");
    };
    let config = std::fs::read_to_string(t.join("config.json")).unwrap();
    refused(&["--lr", "0.5"], "--lr");
    refused(&["--seed", "4"], "--seed");
    refused(&["--batch", "7"], "--batch");
    // the dataset and the preset come first in the argument list; rewrite them
    let a: Vec<String> = resume(&[])
        .into_iter()
        .map(|x| match x.as_str() {
            "two-moons" => "checkerboard".into(),
            _ => x,
        })
        .collect();
    let (code, err) = fails_owned(&a);
    assert_eq!(code, 2);
    assert!(err.contains("--dataset two-moons"), "{err}");
    let a: Vec<String> = resume(&[])
        .into_iter()
        .map(|x| match x.as_str() {
            "tiny" => "small".into(),
            _ => x,
        })
        .collect();
    let (code, err) = fails_owned(&a);
    assert_eq!(code, 2);
    assert!(err.contains("architecture"), "{err}");
    assert_eq!(
        std::fs::read_to_string(t.join("config.json")).unwrap(),
        config,
        "a refused resume rewrites nothing"
    );
    // the same run with more iterations continues
    let a = resume(&[]);
    let out = ok_owned(&a);
    assert!(out.contains("trained 30 iters"), "{out}");
    // --resume where nothing was trained
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--resume",
        "--out",
        s(&tmp.path().join("never")),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn nonsense_numbers_and_the_other_methods_options_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "10");
    let out = tmp.path().join("out");
    let o = s(&out);
    let tt = s(&t);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--iters",
                "0",
                "--out",
                o,
            ],
            "--iters",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--batch",
                "0",
                "--out",
                o,
            ],
            "--batch",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--lr",
                "nan",
                "--out",
                o,
            ],
            "--lr",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--lr",
                "-1",
                "--out",
                o,
            ],
            "--lr",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--lr",
                "0",
                "--out",
                o,
            ],
            "--lr",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--checkpoint-every",
                "0",
                "--out",
                o,
            ],
            "--checkpoint-every",
        ),
        (vec!["bundle", "verify", o, "--runs", "0"], "--runs"),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--time-budget",
                "-3",
                "--out",
                o,
            ],
            "--time-budget",
        ),
        (
            vec!["distill", "--teacher", tt, "--steps", "9", "--out", o],
            "--steps",
        ),
        (
            vec![
                "distill",
                "--teacher",
                tt,
                "--teacher-steps",
                "0",
                "--out",
                o,
            ],
            "--teacher-steps",
        ),
        (
            vec!["distill", "--teacher", tt, "--batch", "0", "--out", o],
            "--batch",
        ),
        (
            vec![
                "eval",
                "--model",
                tt,
                "--dataset",
                "two-moons",
                "--count",
                "3",
            ],
            "--count",
        ),
        (
            vec!["sample", "--model", tt, "--count", "0", "--png", o],
            "--count",
        ),
        (
            vec!["bench", "--model", tt, "--batch", "1,0", "--out", o],
            "--batch",
        ),
        (
            vec![
                "build", "--model", tt, "--target", "tract", "--runs", "0", "--out", o,
            ],
            "--runs",
        ),
        (
            vec![
                "pairs",
                "generate",
                "--teacher",
                tt,
                "--count",
                "0",
                "--out",
                o,
            ],
            "--count",
        ),
        (
            vec![
                "distill",
                "--teacher",
                tt,
                "--koopman",
                "eigen",
                "--adversarial",
                "--out",
                o,
            ],
            "--koopman is an option of --method kdm, not of --method imagine-flash",
        ),
        (
            vec![
                "distill", "--method", "kdm", "--pairs", tt, "--steps", "3", "--tau", "power:3",
                "--out", o,
            ],
            "--steps, --tau are options of --method imagine-flash, not of --method kdm",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--out",
                o,
                "--no-such-flag",
            ],
            "--no-such-flag",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn io_errors_name_their_path_and_failed_commands_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "10");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let in_file = file.join("b");
    for (args, needle) in [
        (
            vec![
                "build",
                "--model",
                s(&t),
                "--target",
                "tract",
                "--out",
                "/proc/flashctl-nope/b",
            ],
            "/proc/flashctl-nope",
        ),
        (
            vec![
                "build",
                "--model",
                s(&t),
                "--target",
                "tract",
                "--out",
                s(&in_file),
            ],
            s(&in_file),
        ),
        (
            vec![
                "sample",
                "--model",
                s(&t),
                "--out",
                s(&in_file.join("x.safetensors")),
            ],
            s(&file),
        ),
        (
            vec![
                "export",
                "--model",
                s(&t.join("config.json")),
                "--out",
                s(&tmp.path().join("g/m.onnx")),
            ],
            "is a file",
        ),
        (
            vec![
                "teacher",
                "train",
                "--dataset",
                "two-moons",
                "--out",
                s(&file),
            ],
            "not a directory",
        ),
    ] {
        let (code, err) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("g").exists());

    // a bench that fails after exporting its graphs (the runtime cannot load) leaves no scratch
    // files and no --out
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&scratch).unwrap();
    let bench_out = tmp.path().join("bench");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_flashctl"))
        .args([
            "bench",
            "--model",
            s(&t),
            "--runtime",
            "no-such-runtime",
            "--batch",
            "1",
            "--runs",
            "1",
            "--out",
            s(&bench_out),
        ])
        .env("TMPDIR", &scratch)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(entries(&scratch).is_empty(), "{:?}", entries(&scratch));
    assert!(!bench_out.exists());

    // a training run that diverges before its first checkpoint leaves no directory
    let diverged = tmp.path().join("diverged");
    let (code, err) = fails(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--preset",
        "tiny",
        "--iters",
        "50",
        "--lr",
        "1e30",
        "--out",
        s(&diverged),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert!(!diverged.exists(), "{:?}", entries(&diverged));
}

#[test]
fn outputs_go_only_where_out_says_and_logs_show_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "40");
    let before = entries(&t);
    // eval without --out prints its report and writes nothing
    let json = ok(&[
        "eval",
        "--model",
        s(&t),
        "--dataset",
        "two-moons",
        "--count",
        "200",
        "--steps",
        "2",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["count"], 200);
    assert!(r["png"].is_null());
    // the old spelling is still read
    ok(&[
        "eval",
        "--model",
        s(&t),
        "--dataset",
        "two-moons",
        "--samples",
        "100",
        "--steps",
        "2",
    ]);
    // with --out: eval.json and the scatter there; never into a model directory
    let ev = tmp.path().join("ev");
    ok(&[
        "eval",
        "--model",
        s(&t),
        "--dataset",
        "two-moons",
        "--count",
        "100",
        "--steps",
        "2",
        "--out",
        s(&ev),
    ]);
    assert_eq!(entries(&ev), ["eval.json", "samples_vs_data.png"]);
    let (code, err) = fails(&[
        "eval",
        "--model",
        s(&t),
        "--dataset",
        "two-moons",
        "--count",
        "100",
        "--out",
        s(&t),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("a report is not written into it"), "{err}");
    // sample needs somewhere to write
    let (code, err) = fails(&["sample", "--model", s(&t), "--steps", "2"]);
    assert_eq!(code, 2);
    assert!(err.contains("--png") && err.contains("--out"), "{err}");
    // bench without --out: nothing written, not even in the working directory
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_flashctl"))
        .args([
            "bench",
            "--model",
            s(&t),
            "--batch",
            "1",
            "--runs",
            "1",
            "--json",
        ])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["student"]["per_batch"][0]["latency_ms"]["p50"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(entries(&cwd).is_empty(), "{:?}", entries(&cwd));
    assert_eq!(
        entries(&t),
        before,
        "nothing was written into the model directory"
    );

    // training into a pipe prints progress lines as it goes
    let o = flashctl(&[
        "teacher",
        "train",
        "--dataset",
        "two-moons",
        "--preset",
        "tiny",
        "--iters",
        "40",
        "--out",
        s(&tmp.path().join("t2")),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines = stdout.lines().filter(|l| l.starts_with("iter ")).count();
    assert!(lines >= 10, "{stdout}");
    assert!(stdout.contains("iter 40/40 loss"), "{stdout}");
}

#[test]
fn one_vocabulary_old_spellings_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "10");
    // --student-preset is read as --preset, build's `tensorrt` as `ort-tensorrt` (refused here
    // only because no TensorRT is installed: the name itself is known)
    ok(&[
        "distill",
        "--teacher",
        s(&t),
        "--student-preset",
        "tiny",
        "--steps",
        "1",
        "--iters",
        "5",
        "--out",
        s(&tmp.path().join("st")),
    ]);
    let (_, err) = fails(&[
        "build",
        "--model",
        s(&t),
        "--target",
        "tensorrt",
        "--out",
        s(&tmp.path().join("b")),
    ]);
    assert!(!err.contains("unknown target"), "{err}");
    // sample --out writes `image`, read back by --inputs as `noise`
    let x = tmp.path().join("x.safetensors");
    ok(&[
        "sample",
        "--model",
        s(&t),
        "--steps",
        "2",
        "--count",
        "4",
        "--out",
        s(&x),
    ]);
    let m = common::load(&x);
    assert_eq!(m["image"].dims(), &[4, 2]);
    let noise = tmp.path().join("noise.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("noise".to_string(), m["image"].clone())]),
        &noise,
    )
    .unwrap();
    ok(&[
        "sample",
        "--model",
        s(&t),
        "--steps",
        "2",
        "--inputs",
        s(&noise),
        "--out",
        s(&tmp.path().join("y.safetensors")),
    ]);
    // validate names the runtime that cannot load a graph, on one line, exit 2
    if common::ort_available() {
        let graph = tmp.path().join("g/model.onnx");
        ok(&[
            "export",
            "--model",
            s(&t),
            "--steps",
            "2",
            "--out",
            s(&graph),
        ]);
        let mut m = flashctl_exporters::decode_model(&std::fs::read(&graph).unwrap()).unwrap();
        m.ir_version = 99;
        std::fs::write(&graph, flashctl_exporters::encode_model(&m)).unwrap();
        let (code, err) = fails(&["validate", s(&graph), "--runtimes", "ort-cpu"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("ort-cpu could not load"), "{err}");
    }
}

#[test]
fn bundle_verify_refuses_a_reference_output_it_cannot_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "10");
    let bundle = tmp.path().join("bundle");
    ok(&[
        "build",
        "--model",
        s(&t),
        "--steps",
        "2",
        "--target",
        "tract",
        "--runs",
        "1",
        "--cache-dir",
        s(&tmp.path().join("cache")),
        "--out",
        s(&bundle),
    ]);
    // a reference that holds an output the graph does not have, re-hashed into the manifest so
    // that only the comparison can object
    let reference = bundle.join("onnx/reference.safetensors");
    let mut r = common::load(&reference);
    r.insert("ghost".into(), r["image"].clone());
    candle_core::safetensors::save(&r, &reference).unwrap();
    let manifest_path = bundle.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let sha = flashctl::checkpoint::sha256_hex(&std::fs::read(&reference).unwrap());
    m["files"]["onnx/reference.safetensors"] = sha.into();
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let (code, err) = fails(&["bundle", "verify", s(&bundle), "--runs", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn validate_by_default_checks_what_this_machine_has_and_a_named_runtime_must_load() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(tmp.path(), "teacher", "10");
    let graph = tmp.path().join("g/model.onnx");
    ok(&[
        "export",
        "--model",
        s(&t),
        "--steps",
        "2",
        "--out",
        s(&graph),
    ]);
    let without_ort = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flashctl"))
            .args(args)
            .env(
                "ORT_DYLIB_PATH",
                tmp.path().join("no-such-libonnxruntime.so"),
            )
            .output()
            .unwrap()
    };
    let o = without_ort(&["validate", s(&graph)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("runtimes: tract "), "{stdout}");
    assert!(stdout.contains("ort-cpu: not installed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let o = without_ort(&["validate", s(&graph), "--runtimes", "tract,ort-cpu"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
