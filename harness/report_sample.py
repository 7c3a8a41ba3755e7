"""Synthetic results files: the report's self-tests, its benchmark, and trying the report out.

The records have the shape the runner writes (``harness/runner.py``), with made-up
metrics: mostly passes, and a seeded sprinkle of fail, known, stale, raised, crashed,
timeout and skip. Case parameters come from real ``Case`` objects, so the report's oracle
gaps and reproducers work on them. Nothing here is evidence about any framework.

    >>> paths = synthetic(Path("/tmp/demo"), envs=["current", "old"], adapters=["torch", "keras3-jax"])
    >>> render_paths(paths, Path("/tmp/demo/index.html"))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.cases import Case, load_cases
from harness.results import dumps

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = ("torch", "keras3-tensorflow", "keras3-jax", "keras3-torch", "tf-keras-fused", "tf-keras-nonfused",
            "tf-raw", "tf-fused", "flax-linen", "flax-linen-twopass", "flax-nnx", "flax-nnx-twopass")
TRAIN = ("running_mean", "running_var", "y", "dx", "dgamma", "dbeta")


def conventions_for(adapter: str) -> dict[str, Any]:
    """Plausible declared conventions per adapter family (PyTorch, Keras/tf-keras, raw TF, Flax)."""
    if adapter.startswith("torch"):
        return {"momentum_style": "weight_of_new", "running_var_estimator": "unbiased", "default_eps": 1e-5,
                "default_momentum": 0.1, "native_layout": "channels_first", "single_value_training": "raises",
                "notes": ""}
    if adapter.startswith("flax"):
        return {"momentum_style": "decay_of_old", "running_var_estimator": "biased", "default_eps": 1e-5,
                "default_momentum": 0.99, "native_layout": "channels_last", "single_value_training": "computes",
                "notes": ""}
    if adapter in ("tf-fused", "tf-keras-fused"):
        return {"momentum_style": "decay_of_old", "running_var_estimator": "unbiased_guarded", "default_eps": 1e-3,
                "default_momentum": 0.99, "native_layout": "channels_last", "single_value_training": "computes",
                "notes": ""}
    return {"momentum_style": "decay_of_old", "running_var_estimator": "biased", "default_eps": 1e-3,
            "default_momentum": 0.99, "native_layout": "channels_last", "single_value_training": "computes",
            "notes": ""}


def settings_for(case: Case, conv: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings as passed, effective momentum in weight-of-new style and eps), like Adapter.mapped/effective."""
    if case.use_defaults:
        m, eps = conv["default_momentum"], conv["default_eps"]
    else:
        m = None if case.momentum == "cumulative" else (
            case.momentum if conv["momentum_style"] == "weight_of_new" else 1.0 - case.momentum)
        eps = case.eps
    eff_m = "cumulative" if m is None else (m if conv["momentum_style"] == "weight_of_new" else 1.0 - m)
    return ({"momentum": m, "eps": eps, "axis": case.channel_axis, "training_flags": {}},
            {"momentum": eff_m, "eps": eps})


def _metrics(rng: np.random.Generator, case: Case, q: str, bad: bool) -> dict[str, Any]:
    shape = case.physical_shape if q in ("y", "dx", "y_eval", "dx_eval") else (case.channels,)
    idx = [int(rng.integers(0, d)) for d in shape]
    ulp = float(10 ** rng.uniform(3, 8)) if bad else float(10 ** rng.uniform(-1.5, 1.2))
    expected = float(rng.standard_normal())
    spacing = 2.0 ** math.floor(math.log2(max(abs(expected), 1e-30))) * 2**-23
    abs_err = ulp * spacing
    threshold = abs_err / (10 ** rng.uniform(-4, -0.5)) if bad else abs_err * 10 ** rng.uniform(0.3, 2.0)
    total = int(np.prod(shape))
    return {"max_abs_err": abs_err, "max_rel_err": abs_err / max(abs(expected), 1e-30), "max_ulp_err": ulp,
            "threshold": threshold, "error_ratio": abs_err / threshold, "worst_index": idx, "expected": expected,
            "observed": expected + abs_err, "mismatched": int(rng.integers(1, total + 1)) if bad else 0,
            "total": total, "mismatch_kind": "value" if bad else "match", "observed_dtype": case.dtype,
            "digest": f"{int(rng.integers(0, 2**63)):016x}"}


def cell_records(case: Case, adapter: str, env: str, version: str, rng: np.random.Generator,
                 fate: str = "pass") -> list[dict[str, Any]]:
    """Every record of one (case, adapter) cell. ``fate``: pass | fail | known | stale | raised | crashed |
    timeout | skip | expected-raise (what the cell is made to show)."""
    base = {"kind": "result", "env": env, "case": case.name, "adapter": adapter, "framework": adapter.split("-")[0],
            "framework_version": version}
    if fate == "skip":
        return [{**base, "quantity": "outcome", "step": None, "verdict": "skip",
                 "message": f"{adapter} does not support dtype {case.dtype}"}]
    conv = conventions_for(adapter)
    settings, effective = settings_for(case, conv)
    out = {**base, "quantity": "outcome", "step": None, "verdict": "pass", "message": "returned normally"}
    records = [out]
    if fate in ("raised", "expected-raise"):
        out.update(verdict=fate, exception_type="ValueError", exception_stage="train step 0",
                   exception_message="Expected more than 1 value per channel when training",
                   message="unexpected exception during train step 0: ValueError: Expected more than 1 value "
                           "per channel when training")
    elif fate in ("crashed", "timeout"):
        out.update(verdict=fate, exit_code=-11 if fate == "crashed" else None,
                   message=("worker died with signal 11 (SIGSEGV)" if fate == "crashed"
                            else "no answer within 300 s; worker killed"),
                   stderr_tail="Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call "
                               "first):\n  File \"bn.py\", line 42 in forward")
    else:
        bad_q = {"fail": "running_var", "known": "y", "stale": None}.get(fate)
        keys = [(q, s) for s in range(case.steps) for q in TRAIN
                if case.affine or q not in ("dgamma", "dbeta")
                if case.track_running_stats or q not in ("running_mean", "running_var")]
        keys += [("y_eval", None), ("dx_eval", None)]
        for q, s in keys:
            bad = bad_q is not None and (q == bad_q or (fate == "fail" and q == "y_eval"))
            m = _metrics(rng, case, q, bad)
            rec = {**base, "quantity": q, "step": s, **m, "verdict": "pass", "message": ""}
            if bad:
                rec["verdict"] = "known" if fate == "known" else "fail"
                rec["message"] = (f"{q}: values differ\n  Mismatched elements: {m['mismatched']} / {m['total']}\n"
                                  f"  Reproduce: pytest \"tests/parity/test_parity.py::test_parity[{adapter}-"
                                  f"{case.name}]\"")
                if fate == "known":
                    rec["ledger"] = {"id": f"{adapter}-sample-entry", "kind": "numerical weakness",
                                     "reason": "a made-up reason for the sample data",
                                     "link": "https://github.com/pytorch/pytorch/issues/5410",
                                     "observed": "sample", "versions": ">=0"}
            records.append(rec)
        if fate == "stale":
            records.append({**base, "quantity": "dx|dgamma", "step": None, "verdict": "stale",
                            "ledger": {"id": f"{adapter}-stale-entry", "kind": "framework bug",
                                       "reason": "fixed upstream", "link": "https://example.org/issue/1",
                                       "observed": "sample", "versions": ">=0"},
                            "message": f"ledger entry '{adapter}-stale-entry' expects a difference in 'dx|dgamma' "
                                       "here, but nothing differed"})
    verdicts = [r["verdict"] for r in records]
    order = ["pass", "skip", "expected-raise", "known", "stale", "fail", "raised", "timeout", "crashed"]
    records.append({"kind": "cell", "env": env, "case": case.name, "adapter": adapter,
                    "framework": base["framework"], "framework_version": version,
                    "verdict": max(verdicts, key=order.index), "case_params": case.summary(), "tags": list(case.tags),
                    "file": case.file, "conventions": conv, "settings": settings, "effective": effective,
                    "info": {"compute_s": float(rng.uniform(0.001, 0.02))}, "worker": {"pid": 1000},
                    "status": "returned" if fate not in ("crashed", "timeout") else fate,
                    "wall_s": float(rng.uniform(0.002, 0.05)), "input_digests": {"x": "0" * 16, "x_eval": "0" * 16}})
    return records


def header(env: str, adapters: list[str], status: str = "complete") -> dict[str, Any]:
    versions = {"bnparity": "0.1.0", "numpy": "2.4.6"}
    for a in adapters:
        versions[a.split("-")[0]] = "2.13.0" if a.startswith("torch") else "1.0.0"
    return {"kind": "header", "schema_version": 1, "env": env, "status": status,
            "started": "2026-01-01T00:00:00+0000", "finished": "2026-01-01T00:05:00+0000", "versions": versions,
            "cases_hash": "0" * 64, "platform": {"system": "Linux", "machine": "x86_64", "python": "3.11.7"},
            "adapters": list(adapters), "argv": ["tests/parity"], "timings": {},
            "sample": "made-up metrics from harness.report_sample; not a measurement of any framework"}


def write(path: Path, head: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps(head) + "\n")
        for r in records:
            f.write(dumps(r) + "\n")
    return path


def synthetic(out_dir: Path, envs: list[str], adapters: list[str] | tuple[str, ...] = ADAPTERS,
              cases: list[Case] | None = None, seed: int = 0, bad_fraction: float = 0.06,
              statuses: dict[str, str] | None = None) -> list[Path]:
    """One results file per environment under ``out_dir/<env>/results.jsonl``; returns their paths."""
    cases = cases if cases is not None else load_cases([REPO / "cases"])
    fates = ["fail", "known", "stale", "raised", "crashed", "timeout", "skip"]
    paths = []
    for k, env in enumerate(envs):
        rng = np.random.default_rng([seed, k])
        records: list[dict[str, Any]] = []
        for case in cases:
            for a in adapters:
                fate = str(rng.choice(fates)) if rng.random() < bad_fraction else "pass"
                records.extend(cell_records(case, a, env, "1.0.0" if not a.startswith("torch") else "2.13.0",
                                            rng, fate))
        status = (statuses or {}).get(env, "complete")
        paths.append(write(Path(out_dir) / env / "results.jsonl", header(env, list(adapters), status), records))
    return paths
