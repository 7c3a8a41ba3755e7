"""What the distributed adapters declare about their frameworks, checked on the real frameworks (marker
``frameworks``: tox's ``current`` env runs these, ``unit`` skips them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from harness.adapters.dist_torch import SYNC_CPU_ERROR
from tests.unit.conftest import installed_adapter

pytestmark = pytest.mark.frameworks


def test_torch_sync_batchnorm_refuses_cpu_tensors_in_the_words_the_skip_quotes(tmp_path):
    """torch-dp skips the synchronized cases on a CPU-only machine quoting torch's error: a torch whose
    SyncBatchNorm starts running on CPU tensors (or words it otherwise) fails this, and the skip must go."""
    installed_adapter("torch-dp")  # (a skip where torch is not installed, a failure where it must be)
    script = textwrap.dedent(f"""
        import torch, torch.distributed as dist
        dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
        bn = torch.nn.SyncBatchNorm(3)
        try:
            bn(torch.randn(4, 3, 2))
            print("returned")
        except Exception as e:
            print(f"{{type(e).__name__}}: {{e}}")
        """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == SYNC_CPU_ERROR
