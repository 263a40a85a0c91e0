#!/usr/bin/env python3
"""Fold the outputs of scripts/gpu_job.sh's stages into one results.json (atomically).

usage: gpu_collect.py WORK_DIR RESULTS_JSON PROFILE DEVICE
Reads WORK_DIR/stages.tsv (name, wall time, exit code) and each stage's stdout (NAME.out):
training lines ("N iters on DEV in S s: X ms/iter", time-budget stops), the --json reports of
eval / validate / bench, and the PyTorch peer's peer.json; derives the peer ratios.
"""
import json
import re
import sys
from pathlib import Path

work, dest, profile, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {"profile": profile, "device": device, "stages": {}}
tsv = work / "stages.tsv"
for line in (tsv.read_text().splitlines() if tsv.exists() else []):
    name, dt, rc = line.split("\t")
    st = {"wall": dt, "exit_code": int(rc)}
    out = (work / f"{name}.out").read_text(errors="replace") if (work / f"{name}.out").exists() else ""
    m = re.search(r"(\d+) iters on (\S+) in ([\d.]+) s: ([\d.]+) ms/iter", out)
    if m:
        st["train"] = {"iters_run": int(m[1]), "device": m[2], "seconds": float(m[3]),
                       "ms_per_iter": float(m[4])}
        b = re.search(r"stopped by --time-budget after (\d+) of (\d+)", out)
        st["train"]["stopped_by_time_budget"] = bool(b)
    s = out.lstrip()
    if s.startswith("{"):
        try:
            st["report"] = json.loads(s)
        except json.JSONDecodeError:
            st["report_unparsed"] = s[:2000]
    if name == "env":
        st["text"] = out.strip()[:2000]
    res["stages"][name] = st
peer_path = work / "peer.json"
if peer_path.exists():
    peer = json.loads(peer_path.read_text())
    res["peer"] = peer
    # ratios: flashctl's exported 3-step student (bench, student p50) / PyTorch's, per batch, at
    # the same math: ORT fp32 (TF32 off) vs PyTorch :fp32, ORT with TF32 vs PyTorch :tf32
    ratios = []
    for math, stage in (("fp32", "bench_fp32"), ("tf32", "bench_fp32_tf32")):
        bench = res["stages"].get(stage, {}).get("report")
        if not bench:
            continue
        ours = {b["batch"]: b for b in bench["student"]["per_batch"]}
        for r in peer.get("sampler", []):
            o = ours.get(r["batch"])
            if o and r.get("math") == math:
                ratios.append({"batch": r["batch"], "math": math, "peer_mode": r["mode"],
                               "flashctl_p50_ms": o["latency_ms"]["p50"], "peer_p50_ms": r["p50_ms"],
                               "ratio": o["latency_ms"]["p50"] / r["p50_ms"]})
    res["ratios_vs_peer"] = ratios
    tr = res["stages"].get("teacher_train", {}).get("train")
    if tr and "train_step" in peer:
        res["train_throughput_vs_peer"] = peer["train_step"]["p50_ms"] / tr["ms_per_iter"]
# ONNX Runtime's own per-node profiles (FLASHCTL_ORT_PROFILE): kernel time by op and provider
profiles = {}
for f in sorted((work / "ortprof").glob("*.json")) if (work / "ortprof").exists() else []:
    try:
        events = json.loads(f.read_text())
    except json.JSONDecodeError:
        continue
    by_op, by_provider, total = {}, {}, 0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        prov = e.get("args", {}).get("provider", "?")
        by_op[op] = by_op.get(op, 0) + e["dur"]
        by_provider[prov] = by_provider.get(prov, 0) + e["dur"]
        total += e["dur"]
    if total:
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
        profiles[f.name] = {"kernel_us": total, "by_provider_us": by_provider,
                            "top_ops": [{"op": k, "us": v, "share": v / total} for k, v in top]}
if profiles:
    res["ort_profiles"] = profiles
tmp = dest.with_suffix(".partial")
tmp.write_text(json.dumps(res, indent=2))
tmp.replace(dest)
