#!/usr/bin/env python3
"""The PyTorch peer: the same UNet as a flashctl model, run by diffusers, timed beside flashctl.

It builds diffusers' UNet2DModel from the model's config.json (flashctl writes diffusers' own
keyword names), loads model.safetensors strictly, and replays the export's sampler plan
(manifest.json: per-step coefficients, noise correction, clipping), so the PyTorch run and the
exported graph compute the same function. Before timing anything it checks that: the peer's
output on the export's reference inputs must match reference.safetensors (fp32, TF32 off).

Then it times, per batch size, the whole few-step sampler in eager mode and under torch.compile
(and, with --train-batch, one DDPM training step: forward, backward, AdamW), and writes JSON.

  python3 scripts/torch_peer.py --model MODEL_DIR --export EXPORT_DIR --device cuda \
      --batch 1,64 --modes eager,compile --train-batch 128 --out peer.json

Needs torch, diffusers, safetensors and numpy (docs/gpu.md says how they reach the GPU machine).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="flashctl model directory (UNet)")
    p.add_argument("--export", type=Path,
                   help="its `flashctl export` directory (needed for the sampler; without it only "
                        "the training step is timed, --train-batch required)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="1,64", help="batch sizes, comma separated")
    p.add_argument("--modes", default="eager:fp32,eager:tf32,compile:tf32",
                   help="MODE:MATH, comma separated; MODE eager, compile (torch.compile "
                        "default) or compile-cudagraphs (mode=reduce-overhead); MATH fp32 "
                        "(TF32 off) or tf32 (TF32 for matmul and conv)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--train-batch", type=int, default=0, help="also time a training step")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--parity-atol", type=float, default=1e-4)
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler table of the eager sampler at the first batch size "
                        "(top ops by device time, kernel launch counts)")
    p.add_argument("--out", type=Path)
    return p.parse_args()


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_unet(model_dir, device):
    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    den = dict(cfg["denoiser"])
    if den.pop("type", None) != "unet":
        fail(f"{model_dir}: the peer runs UNet denoisers, this is `{cfg['denoiser'].get('type')}`")
    unet = UNet2DModel(**den)
    state = load_file(str(model_dir / "model.safetensors"))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        fail(f"{model_dir}: weights do not fit UNet2DModel: missing {missing[:3]}, "
             f"unexpected {unexpected[:3]}")
    return unet.to(device).eval(), cfg


def make_sampler(unet, plan):
    """The sampler plan of flashctl's manifest, step for step (src/sampler.rs `apply_step`)."""
    import torch

    steps = plan["steps"]

    def run(noise, labels):
        x = noise * plan["init_sigma"] if plan["init_sigma"] != 1.0 else noise
        x_t = x
        for i, s in enumerate(steps):
            t = torch.full((1,), float(s["t"]), device=x.device)
            x_in = x * s["in_scale"] if s["in_scale"] != 1.0 else x
            out = unet(x_in, t, class_labels=labels).sample
            x0 = s["x0_x"] * x + s["x0_out"] * out
            if s["clip"] is not None:
                x0 = x0.clamp(-s["clip"], s["clip"])
            if s["next_eps"] == 0.0:
                eps = None
            elif plan.get("noise_correction") and i == 0:
                eps = x_t
            else:
                eps = s["eps_x"] * x + s["eps_out"] * out
            x = s["next_x"] * x + s["next_x0"] * x0
            if eps is not None:
                x = x + s["next_eps"] * eps
        return x

    return run


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, device, warmup, runs):
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {
        "p50_ms": statistics.median(ts),
        "p90_ms": ts[min(len(ts) - 1, int(0.9 * len(ts)))],
        "mean_ms": statistics.fmean(ts),
        "runs": runs,
    }


def set_tf32(torch, on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def main():
    a = parse_args()
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda: torch sees no GPU")
    if a.export is None and not a.train_batch:
        fail("without --export only the training step is timed: give --train-batch")
    unet, cfg = load_unet(a.model, a.device)
    classes = cfg["denoiser"].get("num_class_embeds")
    shape = cfg["denoiser"]["in_channels"], cfg["denoiser"]["sample_size"], cfg["denoiser"]["sample_size"]
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "model": str(a.model),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "threads": torch.get_num_threads(),
    }
    if a.export is not None:
        sample(a, torch, unet, cfg, classes, shape, report)
    if a.train_batch:
        train_step(a, torch, unet, cfg, classes, shape, report)
    import resource
    report["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of the peer process: {report['peak_rss_kb'] / 1024:.0f} MB")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_suffix(".partial")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(a.out)


def sample(a, torch, unet, cfg, classes, shape, report):
    """Parity of the sampler against the export's reference, then its latency per mode/batch."""
    from safetensors.torch import load_file

    manifest = json.loads((a.export / "manifest.json").read_text())
    plan = manifest["sampler"]
    sampler = make_sampler(unet, plan)
    report["steps"] = len(plan["steps"])

    # 1. the same function: the export's reference inputs give its reference output
    ref = load_file(str(a.export / manifest["reference"]))
    set_tf32(torch, False)
    with torch.no_grad():
        noise = ref["noise"].to(a.device)
        labels = ref["class_labels"].to(a.device) if "class_labels" in ref else None
        got = sampler(noise, labels).cpu()
    out_name = manifest["outputs"][0]["name"]
    err = (got - ref[out_name]).abs().max().item()
    report["parity_max_abs_vs_reference"] = err
    print(f"parity vs {a.export}/{manifest['reference']}: max abs {err:.3g}")
    if not err <= a.parity_atol:
        fail(f"the peer does not compute the exported function: max abs {err:.3g} > {a.parity_atol}")

    # 2. the sampler, per mode and batch size
    report["sampler"] = []
    for spec in [m for m in a.modes.split(",") if m]:
        mode, _, math = spec.partition(":")
        if math not in ("fp32", "tf32"):
            fail(f"--modes {spec}: give the math too, {mode}:fp32 or {mode}:tf32")
        set_tf32(torch, math == "tf32")
        if mode == "eager":
            fn = sampler
        elif mode in ("compile", "compile-cudagraphs"):
            kw = {"mode": "reduce-overhead"} if mode == "compile-cudagraphs" else {}
            fn = torch.compile(sampler, **kw)
        else:
            fail(f"unknown mode `{mode}` (eager, compile, compile-cudagraphs)")
        for b in [int(x) for x in a.batch.split(",")]:
            g = torch.Generator().manual_seed(0)
            x = torch.randn((b, *shape), generator=g).to(a.device)
            y = (torch.arange(b) % classes).to(a.device) if classes else None
            t0 = time.perf_counter()
            with torch.no_grad():
                fn(x, y)
            sync(a.device)
            first_s = time.perf_counter() - t0
            with torch.no_grad():
                r = time_fn(lambda: fn(x, y), a.device, a.warmup, a.runs)
            r.update({"mode": mode, "math": math, "batch": b, "first_call_s": first_s})
            report["sampler"].append(r)
            print(f"{spec:>23} batch {b:>4}: p50 {r['p50_ms']:.2f} ms (first call {first_s:.1f} s)")

    # where PyTorch's eager time goes (launch-bound or not): the profiler's own table
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        b = int(a.batch.split(",")[0])
        x = torch.randn((b, *shape)).to(a.device)
        y = (torch.arange(b) % classes).to(a.device) if classes else None
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
        with torch.no_grad(), profile(activities=acts) as prof:
            for _ in range(3):
                sampler(x, y)
            sync(a.device)
        key = "cuda_time_total" if a.device.startswith("cuda") else "cpu_time_total"
        report["profile_eager"] = {"batch": b, "calls": 3,
                                   "table": prof.key_averages().table(sort_by=key, row_limit=15)}
        print(report["profile_eager"]["table"])



def train_step(a, torch, unet, cfg, classes, shape, report):
    """One training step of the same UNet: v-prediction DDPM loss, AdamW, fp32 (TF32 off) as
    flashctl's candle training."""
    set_tf32(torch, False)
    sched = cfg["schedule"]
    betas = torch.linspace(sched["beta_start"], sched["beta_end"], sched["num_train_timesteps"])
    ac = torch.cumprod(1 - betas, 0).to(a.device)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0)
    b = a.train_batch

    def step():
        x0 = torch.rand((b, *shape), device=a.device) * 2 - 1
        eps = torch.randn_like(x0)
        t = torch.randint(0, len(betas), (b,), device=a.device)
        sa, sb = ac[t].sqrt().view(-1, 1, 1, 1), (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
        y = torch.randint(0, classes, (b,), device=a.device) if classes else None
        pred = unet(sa * x0 + sb * eps, t, class_labels=y).sample
        loss = ((pred - (sa * eps - sb * x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()  # one host sync per step, as flashctl's loop logs its loss

    r = time_fn(step, a.device, a.warmup, a.train_steps)
    r.update({"mode": "eager", "math": "fp32", "batch": b})
    report["train_step"] = r
    print(f"train step (fwd+bwd+AdamW) batch {b}: p50 {r['p50_ms']:.2f} ms")


if __name__ == "__main__":
    main()
