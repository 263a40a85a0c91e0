#!/usr/bin/env python3
"""Markdown tables for docs/results.md from the `flashctl eval --json` files the results scripts
write (OUTDIR/json/<dataset>.<run>.json). Usage: results_table.py JSON_DIR [JSON_DIR...]"""
import json
import pathlib
import sys

rows = {}
for d in sys.argv[1:]:
    for f in sorted(pathlib.Path(d).glob("*.json")):
        if f.stat().st_size == 0:
            continue  # a run still writing
        ds, rest = f.stem.split(".", 1)
        rows.setdefault(ds, []).append((rest, json.loads(f.read_text())))

for ds, runs in rows.items():
    metric = "fd" if ds == "fashion-mnist" else "swd"
    teacher50 = next((r for n, r in runs if n == "teacher.ddim50"), None)
    base = teacher50["model"]["metrics"][metric] if teacher50 else None
    extra = ["precision", "recall"] if ds == "fashion-mnist" else ["mmd"]
    print(f"\n### {ds}\n")
    print(f"| run | steps | {metric} | x teacher-50 | " + " | ".join(extra) + " | psnr vs teacher (dB) |")
    print("|---|---|---|---|" + "---|" * len(extra) + "---|")

    def order(item):
        name, r = item
        return (0 if name.startswith("teacher") else 1, -r["model"]["steps"] if name.startswith("teacher") else r["model"]["steps"], name)

    for name, r in sorted(runs, key=order):
        m = r["model"]["metrics"]
        ratio = f"{m[metric] / base:.2f}" if base else "-"
        p = r.get("psnr_vs_teacher")
        ps = f"{p:.2f}" if p is not None else "-"
        ex = " | ".join(f"{m[e]:.4f}" for e in extra)
        print(f"| {name} | {r['model']['steps']} | {m[metric]:.4f} | {ratio} | {ex} | {ps} |")
