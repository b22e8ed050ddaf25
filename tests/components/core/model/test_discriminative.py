"""Discriminative learning rates (components/core/model/discriminative.py): the factors per layer group, and the
schema's warnings computing the same backbone rate."""

import numpy as np
import pytest

from components.core.contract.params.train import Phase, _backbone_lr
from components.core.model import discriminative


def test_group_multipliers_are_geometric():
    assert discriminative.group_multipliers(3, 100) == pytest.approx([0.01, 0.1, 1.0])
    assert discriminative.group_multipliers(2, 100) == pytest.approx([0.01, 1.0])
    assert discriminative.group_multipliers(5, 1) == [1.0] * 5


def test_flat_spread_is_fastais_slice_of_one_rate():
    assert discriminative.group_multipliers(3, 10.0, "flat") == [0.1, 0.1, 1.0]  # slice(lr): lr/10 ... lr
    np.testing.assert_allclose(discriminative.group_multipliers(3, 100.0), [0.01, 0.1, 1.0])  # slice(lr/100, lr)


@pytest.mark.parametrize("spread,groups", [("even", 3), ("even", 5), ("flat", 3), ("flat", 4)])
def test_the_schemas_backbone_rate_is_the_last_body_groups(spread, groups):
    """The training warnings (params/train.py, no TensorFlow) read the highest rate a backbone layer trains at: the
    last body group's factor times the rate, as the optimizer gets it."""
    phase = Phase(epochs=1, trainable="all", lr=1e-3, lr_mult=100.0, lr_groups=groups, lr_spread=spread)
    factors = discriminative.group_multipliers(groups, 100.0, spread)
    assert _backbone_lr(phase) == pytest.approx(1e-3 * factors[-2])
