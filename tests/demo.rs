//! The first command runs the whole job: `flashctl demo` on a tiny budget, read back from its
//! summary.json; `validate --junit`; `bench --steps` for a teacher at a step count.

mod common;
use common::{ok, s};

fn demo(out: &std::path::Path, cache: &std::path::Path) -> String {
    ok(&[
        "demo",
        "--out",
        s(out),
        "--cache",
        s(cache),
        "--iters",
        "200",
        "--student-iters",
        "30",
        "--pairs",
        "512",
        "--count",
        "200",
        "--runs",
        "2",
    ])
}

#[test]
fn demo_runs_every_stage_of_the_mission_and_reuses_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, cache) = (tmp.path().join("demo"), tmp.path().join("cache"));
    let stdout = demo(&out, &cache);
    assert!(stdout.contains("demo: PASS"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["passed"], true, "{summary:#}");
    assert_eq!(summary["teacher_cached"], false);
    let stages: Vec<(&str, &str)> = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["stage"].as_str().unwrap(), x["status"].as_str().unwrap()))
        .collect();
    for want in [
        "teacher",
        "imagine-flash",
        "pairs",
        "kdm",
        "export+validate imagine-flash-3",
        "bench imagine-flash-3",
        "eval imagine-flash-3",
        "export+validate kdm-1",
        "bench kdm-1",
        "eval kdm-1",
        "bundle",
        "picture",
    ] {
        assert!(
            stages.contains(&(want, "pass")),
            "stage {want} did not pass: {stages:?}"
        );
    }
    let students = summary["students"].as_array().unwrap();
    assert_eq!(students.len(), 2);
    for (x, steps) in students.iter().zip([3, 1]) {
        assert_eq!(x["steps"], steps);
        assert!(std::path::Path::new(x["graph"].as_str().unwrap()).is_file());
        let parity = x["parity"].as_array().unwrap();
        assert!(
            parity.iter().any(|p| p[0] == "tract" && p[1] == "pass"),
            "{parity:?}"
        );
        let q = &x["quality"];
        assert_eq!(q["metric"], "swd");
        let ratio = q["ratio"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{q}");
        let speed = x["speed"].as_array().unwrap();
        assert_eq!(speed.len(), 2, "batch 1 and 256");
        for v in speed {
            // a few-step graph against 50 host-driven teacher calls: faster at every batch
            assert!(v["speedup"].as_f64().unwrap() > 1.0, "{v}");
        }
    }
    assert_eq!(summary["bundle"]["verify"], "pass");
    assert!(out.join("bundle/manifest.json").is_file());
    let png = std::fs::read(out.join("samples.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // again: the teacher comes from the cache, the demo's folder is replaced
    let stdout = demo(&out, &cache);
    assert!(stdout.contains("demo: PASS"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["teacher_cached"], true);
    assert!(summary["stages"][0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("reused"));
}

#[test]
fn demo_refuses_a_folder_of_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep").unwrap();
    let (code, err) = common::fails(&["demo", "--out", s(&out)]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing flashctl wrote"), "{err}");
    assert!(out.join("notes.txt").is_file());
}

#[test]
fn validate_writes_junit_with_one_case_per_runtime_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let t = common::tiny_teacher(tmp.path());
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
    let junit = tmp.path().join("report/junit.xml");
    std::fs::create_dir_all(junit.parent().unwrap()).unwrap();
    let runtimes = common::parity_runtimes().join(",");
    ok(&[
        "validate",
        s(&graph),
        "--runtimes",
        &runtimes,
        "--junit",
        s(&junit),
    ]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    let cases = xml.matches("<testcase ").count();
    assert_eq!(
        cases,
        common::parity_runtimes().len(),
        "one output (image) per runtime: {xml}"
    );
    assert!(xml.contains("failures=\"0\" errors=\"0\""), "{xml}");
    assert!(xml.contains("name=\"image\""), "{xml}");

    // a parity miss is a <failure> and the exit code stays 1
    let o = common::flashctl(&[
        "validate",
        s(&graph),
        "--runtimes",
        "tract",
        "--atol",
        "0",
        "--rtol",
        "0",
        "--tolerance",
        "exact",
        "--junit",
        s(&junit),
    ]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    if o.status.code() == Some(1) {
        assert!(xml.contains("<failure type=\"parity\""), "{xml}");
    } else {
        // tract reproduced the reference bit for bit: nothing to fail
        assert_eq!(o.status.code(), Some(0));
        assert!(xml.contains("failures=\"0\""), "{xml}");
    }
}

#[test]
fn bench_takes_a_teacher_at_a_step_count_and_refuses_another_count_for_a_student() {
    let tmp = tempfile::tempdir().unwrap();
    let t = common::tiny_teacher(tmp.path());
    let out = ok(&[
        "bench",
        "--model",
        s(&t),
        "--steps",
        "4",
        "--teacher",
        s(&t),
        "--teacher-steps",
        "20",
        "--batch",
        "1",
        "--runs",
        "2",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["student"]["steps"], 4, "{r:#}");
    assert_eq!(r["teacher"]["steps"], 20);
    // eval takes a teacher at a step count too
    let e: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        s(&t),
        "--steps",
        "3",
        "--dataset",
        "two-moons",
        "--count",
        "50",
        "--json",
    ]))
    .unwrap();
    assert_eq!(e["model"]["steps"], 3, "{e:#}");
    let student = tmp.path().join("student");
    ok(&[
        "distill",
        "--teacher",
        s(&t),
        "--steps",
        "2",
        "--iters",
        "5",
        "--out",
        s(&student),
    ]);
    let (code, err) = common::fails(&[
        "bench",
        "--model",
        s(&student),
        "--steps",
        "4",
        "--batch",
        "1",
        "--runs",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--steps"), "{err}");
}
