import json

from components import lr_find
from tests.support import train_params


def test_lr_find_writes_the_curve_plot_and_the_rate_lr_auto_would_use(tiny_shards, tmp_path):
    summary = lr_find.run(train_params(lr_find={"min_lr": 1e-5, "max_lr": 0.5, "steps": 10}), tiny_shards,
                          tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    assert (tmp_path / "out" / "lr_find.png").stat().st_size > 1000
    assert saved["min_lr"] == 1e-5 and saved["steps"] == len(saved["curve"]["lr"]) >= 5
    assert min(saved["curve"]["lr"]) <= summary["lr_auto_would_use"] <= max(saved["curve"]["lr"])
