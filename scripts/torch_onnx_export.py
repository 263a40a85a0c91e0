#!/usr/bin/env python3
"""torch.onnx's export of a UNet2DModel checkpoint: the graph `flashctl bench --against` compares.

  python3 scripts/torch_onnx_export.py --model DIR --out unet.onnx
  python3 scripts/torch_onnx_export.py --make CONFIG --model DIR --out unet.onnx

DIR is a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors) or a
flashctl model directory (config.json + model.safetensors; flashctl writes diffusers' keyword
names). With --make, DIR is first created with randomly initialised weights (torch seed 0) for
one of the configurations flashctl's tests have never seen (see CONFIGS), with diffusers'
default DDIMScheduler config beside it.

The export is the TorchScript exporter (`dynamo=False`, the one most deployment guides use),
opset 17 unless --opset, batch axis dynamic, inputs `sample` [B, C, H, W] f32, `timestep` [B]
f32 and (class-conditional models) `class_labels` [B] int64, output `out_sample`.
Needs torch, diffusers and onnx from pip (PYTHONPATH may point at --target installs).
"""
import argparse
import json
from pathlib import Path

CONFIGS = {
    # 32x32 RGB, scale-shift time conditioning, attention at two resolutions
    "scale-shift-attn2": dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(32, 64, 64), norm_num_groups=16,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift", attention_head_dim=16,
    ),
    # 28x28 greyscale, 10 classes, attention in the middle only
    "class-cond-28": dict(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        num_class_embeds=10, attention_head_dim=8,
    ),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--make", choices=sorted(CONFIGS))
    p.add_argument("--opset", type=int, default=17)
    a = p.parse_args()

    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    if a.make:
        torch.manual_seed(0)
        from diffusers import DDIMScheduler
        UNet2DModel(**CONFIGS[a.make]).eval().save_pretrained(a.model)
        DDIMScheduler().save_pretrained(a.model)  # flashctl reads the schedule beside the UNet
    cfg = json.loads((a.model / "config.json").read_text())
    if "denoiser" in cfg:  # a flashctl model directory
        cfg = dict(cfg["denoiser"])
        if cfg.pop("type", None) != "unet":
            raise SystemExit(f"error: {a.model}: not a UNet denoiser")
        weights = a.model / "model.safetensors"
    else:  # a diffusers UNet2DModel folder
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        weights = a.model / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        raise SystemExit(f"error: {weights}: missing")
    unet = UNet2DModel(**cfg)
    unet.load_state_dict(load_file(str(weights)), strict=True)
    unet.eval()

    class Call(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, class_labels=None):
            return self.unet(sample, timestep, class_labels=class_labels).sample

    c, s = unet.config.in_channels, unet.config.sample_size
    s = (s, s) if isinstance(s, int) else tuple(s)
    args = [torch.randn(2, c, *s), torch.full((2,), 500.0)]
    names = ["sample", "timestep"]
    if unet.config.num_class_embeds:
        args.append(torch.zeros(2, dtype=torch.int64))
        names.append("class_labels")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".onnx.tmp")
    with torch.no_grad():
        torch.onnx.export(
            Call(unet), tuple(args), str(tmp), dynamo=False, opset_version=a.opset,
            input_names=names, output_names=["out_sample"],
            dynamic_axes={n: {0: "batch"} for n in names + ["out_sample"]},
        )
    tmp.replace(a.out)
    import onnx
    print(f"{a.out}: torch {torch.__version__} TorchScript exporter, opset {a.opset}, "
          f"{len(onnx.load(str(a.out)).graph.node)} nodes")


if __name__ == "__main__":
    main()
