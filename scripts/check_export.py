"""Independent check of a flashctl export, using only the onnx and onnxruntime packages.

Usage: python3 scripts/check_export.py PATH/model.onnx
Checks: onnx.checker.check_model(full_check=True); the graph runs in onnxruntime (Python) on the
inputs stored in reference.safetensors and matches the eager outputs to 1e-4 (fp32) or 1e-2
(fp16 exports, per manifest.json); initializer bytes are within 5% of the denoiser's parameter
bytes (fp16: of half of them).
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

path = sys.argv[1]
folder = os.path.dirname(path)
model = onnx.load(path)
onnx.checker.check_model(model, full_check=True)
ref = load_file(os.path.join(folder, "reference.safetensors"))
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
feeds = {i.name: ref[i.name] for i in sess.get_inputs()}
(image,) = sess.run(["image"], feeds)
err = float(np.abs(image - ref["image"]).max())
manifest = json.load(open(os.path.join(folder, "manifest.json")))
init_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
ratio = init_bytes / manifest["denoiser_parameter_bytes"]
print(f"check_export: onnx.checker full_check ok; onnxruntime {ort.__version__} max abs err {err:.3e}; "
      f"initializer bytes {init_bytes} = {ratio:.4f} x denoiser parameters")
fp16 = manifest.get("precision") == "fp16"
limit = 1e-2 if fp16 else 1e-4
assert np.isfinite(image).all(), "NaN/Inf in the output"
assert err <= limit, f"parity {err} > {limit}"
assert ratio <= (0.55 if fp16 else 1.05), f"initializers {ratio:.3f}x the denoiser's parameters"
