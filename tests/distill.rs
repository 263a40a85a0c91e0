//! Imagine Flash end to end on tiny models: distill -> export -> validate -> eval, resume,
//! ONNX and native teachers giving the same first-iteration loss, and bad input.

mod common;
use common::{fails, ok, s};
use std::path::Path;

fn first_loss(dir: &Path) -> f64 {
    let csv = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    csv.lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn distill_export_validate_eval_for_one_and_three_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let rts = common::parity_runtimes().join(",");
    for k in ["1", "3"] {
        let student = tmp.path().join(format!("student{k}"));
        ok(&[
            "distill",
            "--method",
            "imagine-flash",
            "--teacher",
            s(&teacher),
            "--steps",
            k,
            "--iters",
            "20",
            "--batch",
            "64",
            "--out",
            s(&student),
        ]);
        for f in ["config.json", "model.safetensors", "loss.csv", "loss.png"] {
            assert!(student.join(f).is_file(), "{f} missing");
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(student.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["role"], "student");
        assert_eq!(cfg["sampler"]["noise_correction"], true);
        assert_eq!(cfg["sampler"]["timesteps"][0], 999);
        // export needs no step flag: the student's sampler travels with it
        let graph = tmp.path().join(format!("export{k}/model.onnx"));
        ok(&["export", "--model", s(&student), "--out", s(&graph)]);
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(graph.with_file_name("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["sampler"]["noise_correction"], true);
        assert_eq!(
            manifest["sampler"]["steps"].as_array().unwrap().len(),
            k.parse::<usize>().unwrap()
        );
        let out = ok(&[
            "validate",
            s(&graph),
            "--runtimes",
            &rts,
            "--atol",
            "1e-4",
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["passed"], true, "{out}");
        // a student runs only its own sampler
        let (code, e) = fails(&[
            "export",
            "--model",
            s(&student),
            "--steps",
            "7",
            "--out",
            s(&tmp.path().join(format!("export{k}_7/model.onnx"))),
        ]);
        assert_eq!(code, 2);
        assert!(e.contains("distilled for"), "{e}");
        // eval: 2-D metrics, teacher comparison on the same noise, a PNG
        let out = ok(&[
            "eval",
            "--model",
            s(&student),
            "--dataset",
            "two-moons",
            "--count",
            "200",
            "--teacher",
            s(&teacher),
            "--teacher-steps",
            "10",
            "--out",
            s(&tmp.path().join(format!("eval{k}"))),
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        for m in ["swd", "mmd"] {
            assert!(
                r["model"]["metrics"][m].as_f64().unwrap().is_finite(),
                "{out}"
            );
            assert!(
                r["teacher"]["metrics"][m].as_f64().unwrap().is_finite(),
                "{out}"
            );
        }
        assert!(r["psnr_vs_teacher"].as_f64().unwrap().is_finite());
        assert!(Path::new(r["png"].as_str().unwrap()).is_file());
        // which step breaks: one row per student step, errors against the teacher's ODE
        let out = ok(&[
            "eval",
            "--model",
            s(&student),
            "--dataset",
            "two-moons",
            "--count",
            "64",
            "--teacher",
            s(&teacher),
            "--teacher-steps",
            "8",
            "--per-step",
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = r["per_step"]["steps"].as_array().unwrap();
        assert_eq!(rows.len(), k.parse::<usize>().unwrap(), "{out}");
        assert_eq!(rows.last().unwrap()["t_next"], 0);
        for row in rows {
            for f in ["x0_rmse", "next_rmse", "next_rms"] {
                assert!(row[f].as_f64().unwrap().is_finite(), "{out}");
            }
        }
        assert!(r["per_step"]["sample_rmse_vs_teacher"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn onnx_and_native_copies_of_a_teacher_give_the_same_first_iteration_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let onnx = tmp.path().join("teacher_onnx/denoiser.onnx");
    ok(&[
        "export",
        "--model",
        s(&teacher),
        "--denoiser-only",
        "--out",
        s(&onnx),
    ]);
    let mut losses = vec![];
    for (name, src, rt) in [
        ("native", &teacher, "tract"),
        ("onnx-tract", &onnx, "tract"),
        ("onnx-ort", &onnx, "ort-cpu"),
    ] {
        if rt == "ort-cpu" && !common::ort_available() {
            continue;
        }
        for loss in ["srl", "trajectory"] {
            let out = tmp.path().join(format!("{name}-{loss}"));
            ok(&[
                "distill",
                "--teacher",
                s(src),
                "--teacher-runtime",
                rt,
                "--preset",
                "tiny",
                "--steps",
                "2",
                "--iters",
                "1",
                "--loss",
                loss,
                "--out",
                s(&out),
            ]);
            losses.push((format!("{name} {loss}"), loss, first_loss(&out)));
        }
    }
    for loss in ["srl", "trajectory"] {
        let these: Vec<&(String, &str, f64)> = losses.iter().filter(|l| l.1 == loss).collect();
        let base = these[0].2;
        for (name, _, l) in &these {
            println!("{name}: first loss {l}");
            assert!(
                ((l - base) / base).abs() < 1e-4,
                "{name}: first-iteration loss {l} vs native {base}"
            );
        }
    }
    // an ONNX teacher's weights are opaque: the student must be trained from scratch
    let (code, e) = fails(&[
        "distill",
        "--teacher",
        s(&onnx),
        "--steps",
        "1",
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("--preset"), "{e}");
}

#[test]
fn resumed_distillation_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let full = tmp.path().join("full");
    let split = tmp.path().join("split");
    let args = |out: &Path, iters: &str| -> Vec<String> {
        [
            "distill",
            "--teacher",
            s(&teacher),
            "--steps",
            "2",
            "--batch",
            "32",
            "--checkpoint-every",
            "5",
            "--iters",
            iters,
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&full, "10"));
    run(args(&split, "5"));
    let mut resumed = args(&split, "10");
    resumed.push("--resume".into());
    run(resumed);
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(split.join("model.safetensors")).unwrap(),
        "resumed weights differ"
    );
    // resuming with another method configuration is refused
    let mut other = args(&split, "12");
    other.extend(["--resume".into(), "--loss".into(), "trajectory".into()]);
    let (code, e) = fails(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2);
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn bad_distill_arguments_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let out = tmp.path().join("s");
    for (flag, value, needle) in [
        ("--tau", "warp:3", "--tau"),
        ("--inputs", "sideways", "--inputs"),
        ("--noise-correction", "maybe", "--noise-correction"),
        ("--steps", "0", "--steps"),
        ("--method", "magic", "--method"),
    ] {
        let (code, e) = fails(&[
            "distill",
            "--teacher",
            s(&teacher),
            "--out",
            s(&out),
            flag,
            value,
        ]);
        assert_eq!(code, 2, "{flag}: {e}");
        assert!(e.contains(needle), "{flag}: {e}");
    }
    let (code, e) = fails(&[
        "distill",
        "--teacher",
        s(&tmp.path().join("nope")),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("nope"), "{e}");
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn imagine_flash_with_a_discriminator_keeps_it_out_of_the_student() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = common::tiny_teacher(tmp.path());
    let student = tmp.path().join("adv");
    ok(&[
        "distill",
        "--teacher",
        s(&teacher),
        "--steps",
        "2",
        "--iters",
        "8",
        "--adversarial",
        "--adversarial-weight",
        "0.05",
        "--out",
        s(&student),
    ]);
    let state = common::load(&student.join("train_state.safetensors"));
    assert!(state.keys().any(|k| k.starts_with("param.discriminator")));
    let weights = common::load(&student.join("model.safetensors"));
    assert!(!weights.keys().any(|k| k.contains("discriminator")));
    let cfg = std::fs::read_to_string(student.join("config.json")).unwrap();
    assert!(cfg.contains("\"adversarial\": 0.05"), "{cfg}");
    let graph = tmp.path().join("adv_export/model.onnx");
    ok(&["export", "--model", s(&student), "--out", s(&graph)]);
    ok(&["validate", s(&graph), "--runtimes", "tract"]);
}
