#!/usr/bin/env python3
"""Markdown tables from a GPU job's results.json (scripts/gpu_job.sh), for docs/results.md.

usage: gpu_report.py RESULTS_JSON
Prints what was measured and nothing else: a stage that failed or was skipped shows as such.
Goals from the GPU issue are printed beside the ratios they apply to.
"""
import json
import sys

r = json.load(open(sys.argv[1]))
st = r["stages"]


def rep(name):
    return st.get(name, {}).get("report")


def status(name):
    s = st.get(name)
    if s is None:
        return "not run"
    return "ok" if s["exit_code"] == 0 else f"exit {s['exit_code']} ({s['wall']})"


def f(x, d=2):
    return "-" if x is None else f"{x:.{d}f}"


print(f"profile `{r['profile']}`, device `{r['device']}`; {st.get('env', {}).get('text', '')!r}\n")

print("| run | iterations | ms/iter | stopped by budget | status |")
print("|---|---|---|---|---|")
for name in ["conv_native", "conv_im2col", "teacher_train", "if1_distill", "if2_distill",
             "if3_distill", "kdm_distill"]:
    t = st.get(name, {}).get("train")
    if t:
        print(f"| {name} | {t['iters_run']} | {f(t['ms_per_iter'])} | {t['stopped_by_time_budget']} "
              f"| {status(name)} |")
    else:
        print(f"| {name} | - | - | - | {status(name)} |")

print("\n| model | steps | FD-FMNIST | precision | recall | x teacher | status |")
print("|---|---|---|---|---|---|---|")
teacher_fd = (rep("teacher_eval") or {}).get("model", {}).get("metrics", {}).get("fd")
for name in ["teacher", "if1", "if2", "if3", "kdm"]:
    e = rep(f"{name}_eval")
    if not e:
        print(f"| {name} | - | - | - | - | - | {status(name + '_eval')} |")
        continue
    m = e["model"]["metrics"]
    x = m["fd"] / teacher_fd if teacher_fd and "fd" in m else None
    print(f"| {name} | {e['model']['steps']} | {f(m.get('fd'))} | {f(m.get('precision'))} "
          f"| {f(m.get('recall'))} | {f(x)} | ok |")

print("\n| graph | runtime | provider | max abs | status |")
print("|---|---|---|---|---|")
for name in ["validate_fp32", "validate_fp16"]:
    v = rep(name)
    if not v:
        print(f"| {name} | - | - | - | {status(name)} |")
        continue
    for rt in v["runtimes"]:
        mx = max((o["max_abs"] for o in rt.get("outputs") or []), default=None)
        print(f"| {v['precision']} | {rt['runtime']} | {rt['provider']} | "
              f"{'-' if mx is None else f'{mx:.2e}'} | {rt['status']} |")

print("\n| bench | batch | student p50 ms | teacher-50 p50 ms | speedup | unroll overhead |")
print("|---|---|---|---|---|---|")
for name in ["bench_fp32", "bench_fp32_tf32", "bench_fp16"]:
    b = rep(name)
    if not b:
        print(f"| {name} | - | - | - | - | {status(name)} |")
        continue
    for i, pb in enumerate(b["per_batch"]):
        s = b["student"]["per_batch"][i]
        t = b["teacher"]["per_batch"][i]["latency_ms"]["p50"] if b.get("teacher") else None
        print(f"| {name} ({b['provider']}) | {pb['batch']} | {f(s['latency_ms']['p50'], 3)} | {f(t, 3)} "
              f"| {f(pb['speedup'], 1)} | {f(pb['unroll_overhead'], 3)} |")

peer = r.get("peer")
if peer:
    print(f"\nPyTorch peer: torch {peer['torch']} on {peer['device']}, {peer['parameters']} "
          f"parameters, parity vs the export's reference {peer['parity_max_abs_vs_reference']:.2e}\n")
    print("| mode | math | batch | PyTorch p50 ms | flashctl p50 ms | flashctl / PyTorch | goal |")
    print("|---|---|---|---|---|---|---|")
    for x in r.get("ratios_vs_peer", []):
        goal = "<= 0.2" if x["peer_mode"] == "eager" else "<= 0.5"
        print(f"| {x['peer_mode']} | {x['math']} | {x['batch']} | {f(x['peer_p50_ms'], 3)} "
              f"| {f(x['flashctl_p50_ms'], 3)} | {f(x['ratio'], 3)} | {goal} |")
    if "train_step" in peer:
        tp = r.get("train_throughput_vs_peer")
        print(f"\ntraining step (fwd+bwd+AdamW, batch {peer['train_step']['batch']}): PyTorch eager "
              f"{f(peer['train_step']['p50_ms'])} ms; candle/PyTorch throughput {f(tp, 3)} "
              f"(goal >= 0.7)")
else:
    print(f"\nPyTorch peer: {status('peer')}")

for name, p in (r.get("ort_profiles") or {}).items():
    top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in p["top_ops"][:6])
    print(f"\nORT profile {name}: {p['kernel_us'] / 1e3:.1f} ms kernel time; {top}")
