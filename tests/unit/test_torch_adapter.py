"""The torch adapter's own plumbing, on real torch (marker ``frameworks``: tox's current env runs it)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.adapters.torch_adapter import ADAPTER, memory_format, to_numpy
from harness.cases import Case
from harness.inputs import build

pytestmark = pytest.mark.frameworks


@pytest.fixture(scope="module")
def torch():
    reason = ADAPTER.available()
    if reason:
        if os.environ.get("BNPARITY_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(f"torch required here: {reason}")
        pytest.skip(f"torch: {reason} (tox -e current runs this)")
    import torch

    return torch


def test_bfloat16_arrays_are_copies_not_views_of_the_live_buffer(torch):
    """A bfloat16 array once aliased the tensor: every step's running statistics read as the last step's."""
    t = torch.ones(3, dtype=torch.bfloat16)
    a = to_numpy(t)
    t.add_(1.0)
    assert a.astype(np.float32).tolist() == [1.0, 1.0, 1.0]


def test_pure_bfloat16_running_statistics_differ_per_step(torch):
    case = Case.model_validate({"name": "pure_bf16", "shape": [8, 3, 2, 2], "dtype": "bfloat16",
                                "param_dtype": "bfloat16", "steps": 3, "momentum": 0.5, "seed": 4})
    obs = ADAPTER.run(case, build(case))
    assert obs.raised is None, obs.raised
    steps = [obs.arrays[("running_mean", s)].astype(np.float32) for s in range(3)]
    assert not np.array_equal(steps[0], steps[2]), "step 0 shows the last step's running mean"


@pytest.mark.parametrize("shape, layout, want", [
    ([2, 3, 4, 4], "channels_last", "channels_last"),
    ([2, 3, 2, 2, 2], "channels_last", "channels_last_3d"),
    ([2, 3, 4, 4], "channels_first", "contiguous"),
])
def test_memory_format_names_what_torch_saw(torch, shape, layout, want):
    case = Case.model_validate({"name": "fmt", "shape": shape, "layout": layout, "steps": 1, "seed": 5})
    obs = ADAPTER.run(case, build(case))
    assert obs.info["memory_format"] == want


def test_memory_format_of_a_strided_view(torch):
    assert memory_format(torch.zeros(4, 3)[::2]) == "strided"
