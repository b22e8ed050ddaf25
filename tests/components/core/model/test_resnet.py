"""ResNet34 in Keras and the torchvision weight converter.

PyTorch is not in the project's locks (a 5 GB CUDA build on PyPI), so the converter is tested on a state dict
made with numpy under torchvision's names and shapes, against a numpy forward pass written the way PyTorch
computes it (symmetric padding, -inf max-pool padding, BatchNorm in eval mode). It was also checked once against
a real, randomly initialised torchvision resnet34 (BENCHMARKS.md "ResNet34 and the converter").
"""

import keras
import numpy as np
import pytest

from components.core.contract.errors import CxrError, DataError, ParamsError
from components.core.contract.params.train import TrainConfig
from components.core.model import models, resnet

LAYERS = ((1, 3, 64), (2, 4, 128), (3, 6, 256), (4, 3, 512))


def torchvision_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision resnet34's state dict (names, shapes, PyTorch layouts), random values: conv weights scaled
    so activations stay O(1), BatchNorm with random affine and running statistics."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}

    def conv(name, out, inp, k):
        sd[f"{name}.weight"] = rng.normal(0, np.sqrt(1.0 / (inp * k * k)), (out, inp, k, k)).astype(np.float32)

    def bn(name, n):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.0, n).astype(np.float32)
        sd[f"{name}.bias"] = rng.uniform(-0.1, 0.1, n).astype(np.float32)
        sd[f"{name}.running_mean"] = rng.uniform(-0.1, 0.1, n).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inp = 64
    for i, blocks, out in LAYERS:
        for j in range(blocks):
            conv(f"layer{i}.{j}.conv1", out, inp if j == 0 else out, 3)
            bn(f"layer{i}.{j}.bn1", out)
            conv(f"layer{i}.{j}.conv2", out, out, 3)
            bn(f"layer{i}.{j}.bn2", out)
            if j == 0 and i > 1:
                conv(f"layer{i}.{j}.downsample.0", out, inp, 1)
                bn(f"layer{i}.{j}.downsample.1", out)
        inp = out
    sd["fc.weight"] = rng.normal(0, 0.01, (1000, 512)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
    return sd


# ---------------------------------------------------------------- PyTorch's forward pass, in numpy (NCHW)
def _conv(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, c, h, wd = x.shape
    o, _, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    cols = np.stack([x[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride] for a in range(k) for b in range(k)],
                    axis=2)  # n, c, k*k, oh, ow
    return np.einsum("ncpij,ocp->noij", cols, w.reshape(o, c, k * k))


def _bn(x, sd, name):
    g, b, m, v = (sd[f"{name}.{t}"].astype(np.float64) for t in ("weight", "bias", "running_mean", "running_var"))
    s = (g / np.sqrt(v + 1e-5))[None, :, None, None]
    return (x - m[None, :, None, None]) * s + b[None, :, None, None]


def _maxpool(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max(np.stack([x[:, :, a:a + 2 * h:2, b:b + 2 * w:2] for a in range(3) for b in range(3)]), axis=0)


def torch_forward(sd, x):
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = relu(_bn(_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
    x = _maxpool(x)
    for i, blocks, _ in LAYERS:
        for j in range(blocks):
            p, stride = f"layer{i}.{j}", 2 if (j == 0 and i > 1) else 1
            y = relu(_bn(_conv(x, sd[f"{p}.conv1.weight"], stride, 1), sd, f"{p}.bn1"))
            y = _bn(_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
            short = x
            if f"{p}.downsample.0.weight" in sd:
                short = _bn(_conv(x, sd[f"{p}.downsample.0.weight"], stride, 0), sd, f"{p}.downsample.1")
            x = relu(y + short)
    return x


@pytest.fixture(scope="module")
def state_dict():
    return torchvision_state_dict()


def test_resnet34_has_torchvisions_layers_and_parameter_count():
    body = resnet.backbone_model((64, 64, 3))
    trainable = sum(int(np.prod(w.shape)) for w in body.trainable_weights)
    assert trainable == 21_284_672  # torchvision resnet34 without fc
    assert body.output.shape[1:] == (2, 2, 512)  # stride 32
    convs = [layer for layer in body.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 36 and all(not c.use_bias for c in convs)
    assert sorted(layer.name for layer in body.layers if layer.weights) == sorted(resnet.weight_layer_names())


def test_converted_numpy_state_dict_gives_pytorchs_outputs(state_dict, tmp_path):
    out = resnet.convert_arrays(state_dict, tmp_path / "r34.weights.h5")
    assert out["layers"] == 72 and out["tensors"] == 180  # 36 convs + 36 BatchNorms (4 tensors each)
    body = resnet.backbone_model((32, 32, 3))
    body.load_weights(tmp_path / "r34.weights.h5")
    x = np.random.default_rng(1).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    want = torch_forward(state_dict, x.transpose(0, 3, 1, 2).astype(np.float64)).transpose(0, 2, 3, 1)
    got = body.predict(x, verbose=0)
    assert np.abs(want).max() > 0.1  # a non-trivial output
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_the_classifier_loads_converted_weights_through_imagenet_and_a_path(state_dict, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cfg = TrainConfig(backbone="resnet34", weights="imagenet", image_size=32)
    with pytest.raises(CxrError, match="convert-weights") as err:
        models.build_model(cfg, 3)
    assert str(tmp_path / "keras" / "models" / resnet.IMAGENET_FILE) in str(err.value)
    np.savez(tmp_path / "sd.npz", **state_dict)
    resnet.convert(tmp_path / "sd.npz")  # the default output: the Keras cache, where imagenet looks
    model = models.build_model(cfg, 3)
    np.testing.assert_array_equal(model.get_layer("layer3_0_conv1").get_weights()[0],
                                  state_dict["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("layer4_2_bn2").get_weights()[3],
                                  state_dict["layer4.2.bn2.running_var"])


def test_bad_state_dicts_and_weight_files_are_clear_errors(state_dict, tmp_path):
    broken = {k: v for k, v in state_dict.items() if not k.startswith("layer4.2.bn2")}
    with pytest.raises(DataError, match=r"missing.*layer4_2_bn2"):
        resnet.convert_arrays(broken, tmp_path / "x.weights.h5")
    wrong = {**state_dict, "layer1.0.conv1.weight": np.zeros((64, 64, 5, 5), np.float32)}
    with pytest.raises(DataError, match="layer1_0_conv1"):
        resnet.convert_arrays(wrong, tmp_path / "x.weights.h5")
    if not _has_torch():  # the project's environment: a .pth needs PyTorch, and the message says what to do
        (tmp_path / "w.pth").write_bytes(b"PK")
        with pytest.raises(DataError, match=r"needs PyTorch.*npz"):
            resnet.read_state_dict(tmp_path / "w.pth")
    other = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(ParamsError, match="does not fit backbone resnet34"):
        models.build_model(TrainConfig(backbone="resnet34", weights=str(tmp_path / "mobilenet.weights.h5"),
                                       image_size=32), 3)


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def test_convert_weights_command(state_dict, tmp_path, capsys):
    from cxr.cli import main

    np.savez(tmp_path / "sd.npz", **state_dict)
    out = tmp_path / "r34.weights.h5"
    assert main(["convert-weights", "--state-dict", str(tmp_path / "sd.npz"), "--out", str(out)]) == 0
    assert out.is_file() and f"train.weights: {out}" in capsys.readouterr().out
    assert main(["convert-weights", "--state-dict", str(tmp_path / "nope.npz"), "--out", str(out)]) == 4
