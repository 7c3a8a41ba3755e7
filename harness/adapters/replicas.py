"""What a data-parallel adapter records about the running statistics a step left (in its cell's ``info``, read by the
report's replicas view, ``harness.report.replicas``)."""

from __future__ import annotations

import numpy as np

KEPT_VAR = "running_var_kept"  # the running variance that survived the last training call, per channel
COPIES_SPREAD = "replica_copies_spread"  # max over channels of how far the replicas' copies of it part


def kept_summary(kept_var, spread: float) -> dict[str, object]:
    """The info entries: the kept running variance (6 significant digits) and the replicas' spread."""
    return {KEPT_VAR: [float(f"{v:.6g}") for v in np.asarray(kept_var, dtype=np.float64).reshape(-1)],
            COPIES_SPREAD: float(f"{spread:.3g}")}
