"""What a worker may use of the machine: the thread count it was given, and whether a framework sees a GPU."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys


def thread_count() -> int:
    """Intra-op threads for every framework (``BNPARITY_THREADS``, set by the worker pool; default 1)."""
    return int(os.environ.get("BNPARITY_THREADS", "1"))


_GPU_PROBES = {
    "tensorflow": "import tensorflow as tf; print(bool(tf.config.list_physical_devices('GPU')))",
    "jax": "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))",
    "torch": "import torch; print(torch.cuda.is_available())",
}


@functools.cache
def gpu_visible(module: str) -> bool:
    """Whether ``module`` (tensorflow, jax, torch) sees a GPU, asked in a child interpreter.

    ``bench_devices`` runs in the bench driver's process: importing TensorFlow or JAX there would
    initialize them outside the adapter's worker environment, and JAX would preallocate most of the
    GPU's memory for a process that never computes.
    """
    if module not in _GPU_PROBES or importlib.util.find_spec(module) is None:
        return False
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        res = subprocess.run([sys.executable, "-c", _GPU_PROBES[module]], env=env, capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and res.stdout.strip().endswith("True")
