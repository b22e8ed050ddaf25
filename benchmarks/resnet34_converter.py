"""The ResNet34 converter against a real torchvision resnet34 (randomly initialised), once.

PyTorch is not in the project's locks (PyPI's torch is a 5 GB CUDA build), so it runs in a throwaway
environment given by ``--torch-python``; the Keras side runs here:

    uv venv /tmp/torchvenv && uv pip install -p /tmp/torchvenv/bin/python torch torchvision numpy
    python -m benchmarks.resnet34_converter --torch-python /tmp/torchvenv/bin/python

The torch side builds ``torchvision.models.resnet34(weights=None)`` (seed 0), gives its BatchNorm layers random
affine parameters and the running statistics of random data (so activations stay O(1) through 34 layers, as in
a trained network), saves the state dict as ``.pth`` and ``.npz``, and computes the body's feature map on two
random 224 px images in float32 and in float64. The Keras side converts the ``.npz`` (``cxr convert-weights``),
builds the body, and compares: the feature map (2 × 7 × 7 × 512) and its global average (what the head reads).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile

import numpy as np

from benchmarks.common import ROOT

TORCH_SIDE = r'''
import sys, numpy as np, torch, torchvision
out = sys.argv[1]
torch.manual_seed(0)
m = torchvision.models.resnet34(weights=None)
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.2, 0.2)
            mod.reset_running_stats(); mod.momentum = None  # cumulative average over the batches below
    m.train()
    for s in range(4):
        m(torch.from_numpy(np.random.default_rng(10 + s).normal(0, 1, (8, 3, 224, 224)).astype(np.float32)))
m.eval()
np.savez(f"{out}/sd.npz", **{k: v.numpy() for k, v in m.state_dict().items()})
torch.save(m.state_dict(), f"{out}/resnet34.pth")
x = np.random.default_rng(1).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
body = torch.nn.Sequential(*list(m.children())[:-2])
with torch.no_grad():
    f32 = body(torch.from_numpy(x)).numpy()
    f64 = torch.nn.Sequential(*list(m.double().children())[:-2])(torch.from_numpy(x.astype(np.float64))).numpy()
np.savez(f"{out}/io.npz", x=x, f32=f32, f64=f64)
print(torch.__version__, torchvision.__version__)
'''


def main(argv: list[str] | None = None) -> None:
    import keras

    from components.core.model import resnet

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch-python", required=True, help="a Python with torch and torchvision")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        versions = subprocess.run([a.torch_python, "-c", TORCH_SIDE, tmp], check=True, capture_output=True,
                                  text=True).stdout.split()
        io = np.load(f"{tmp}/io.npz")
        conv = resnet.convert(f"{tmp}/sd.npz", f"{tmp}/r34.weights.h5")
        x = io["x"].transpose(0, 2, 3, 1)
        results = {"torch": versions[0], "torchvision": versions[1], "converted": conv["tensors"]}
        for name, dtype, ref in (("float32", "float32", io["f32"]), ("float64", "float64", io["f64"])):
            keras.config.set_floatx(dtype)
            keras.config.set_dtype_policy(dtype)  # the policy, not only floatx: layers compute in it
            body = resnet.backbone_model()
            assert body.get_layer("conv1").compute_dtype == dtype
            body.load_weights(f"{tmp}/r34.weights.h5")
            got = body.predict(x.astype(dtype), verbose=0).transpose(0, 3, 1, 2)
            results[name] = {"feature_map_max_abs_diff": float(np.abs(got - ref).max()),
                             "pooled_max_abs_diff": float(np.abs(got.mean(axis=(2, 3)) - ref.mean(axis=(2, 3))).max()),
                             "feature_map_max_abs": float(np.abs(ref).max()),
                             "feature_map_mean_abs": float(np.abs(ref).mean())}
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
        pth = subprocess.run([a.torch_python, "-c", "import sys, numpy as np; sys.path.insert(0, '.');"
                              "from components.core.model.resnet import read_state_dict;"
                              f"a = read_state_dict('{tmp}/resnet34.pth'); b = np.load('{tmp}/sd.npz');"
                              "print(all(np.array_equal(a[k], b[k]) for k in b.files) and len(a) == len(b.files))"],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        results["pth_reads_as_npz"] = pth == "True"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
