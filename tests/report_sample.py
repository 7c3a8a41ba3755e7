"""Synthetic results files: the report's self-tests, its benchmark, and trying the report out.

The records are ``harness.schema`` records, as the runner builds them, with made-up metrics:
mostly passes, and a seeded sprinkle of fail, known, stale, raised, crashed, timeout and skip.
Case parameters come from real ``Case`` objects and conventions and settings from the real
adapter objects, so the report's oracle gaps and reproducers work on them. Nothing here is
evidence about any framework. Test support, not shipped: ``benchmarks/bench_report.py`` and
the report's self-tests use it.

    >>> paths = synthetic(Path("/tmp/demo"), envs=["current", "old"], adapters=["torch", "keras3-jax"])
    >>> render_paths(paths, Path("/tmp/demo/index.html"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.adapters.base import Adapter, discover, load_spec
from harness.cases import Case, load_cases
from harness.compare import ulp as ulp_of
from harness.schema import (
    Cell,
    Effective,
    Header,
    LedgerRef,
    OutcomeStatus,
    Quantity,
    Record,
    Result,
    Verdict,
    dumps,
    parse,
)

REPO = Path(__file__).resolve().parents[1]
ADAPTERS = ("torch", "keras3-tensorflow", "keras3-jax", "keras3-torch", "tf-keras-fused", "tf-keras-nonfused",
            "tf-raw", "tf-fused", "flax-linen", "flax-linen-twopass", "flax-nnx", "flax-nnx-twopass")


def _adapter(name: str) -> Adapter:
    """The real adapter object (its conventions and settings need no framework)."""
    specs = discover()
    return load_spec(specs[name]) if name in specs else load_spec(specs["torch"])


def _metrics(rng: np.random.Generator, case: Case, q: str, bad: bool) -> dict[str, Any]:
    shape = (case.channels,) if Quantity(q).per_channel else case.physical_shape
    idx = [int(rng.integers(0, max(d, 1))) for d in shape]  # (an empty batch has no element: index 0 stands in)
    ulp = float(10 ** rng.uniform(3, 8)) if bad else float(10 ** rng.uniform(-1.5, 1.2))
    expected = float(rng.standard_normal())
    spacing = ulp_of(max(abs(expected), 1e-30), "float32")
    abs_err = ulp * spacing
    # error/bound: 3 to 1e4 outside the bound for a difference, 0.01 to 0.5 within it for a pass
    threshold = abs_err / 10 ** rng.uniform(0.5, 4) if bad else abs_err * 10 ** rng.uniform(0.3, 2.0)
    total = max(int(np.prod(shape)), 1)  # (made-up metrics: an empty batch gets one element too)
    rel = abs_err / max(abs(expected), 1e-30)
    stable = abs_err / 10 ** rng.uniform(-0.5, 1.0)  # the stable BN's error: 0.3x to 10x below
    m = {"max_abs_err": abs_err, "max_rel_err": rel, "max_ulp_err": ulp,
         "stable_abs_err": stable, "weak_ratio": abs_err / (stable + spacing),
         "threshold": threshold, "error_ratio": abs_err / threshold, "worst_index": idx, "expected": expected,
         "observed": expected + abs_err, "mismatched": int(rng.integers(1, total + 1)) if bad else 0,
         "total": total, "mismatch_kind": "value" if bad else "match", "observed_dtype": case.dtype,
         "digest": f"{int(rng.integers(0, 2**63)):016x}"}
    if bad:  # over the mismatched elements, each with its own index
        m.update(greatest_abs_diff=abs_err, greatest_abs_index=idx, greatest_rel_diff=rel, greatest_rel_index=idx)
    return m


def cell_records(case: Case, adapter: str, env: str, version: str, rng: np.random.Generator,
                 fate: str = "pass") -> list[Result | Cell]:
    """Every record of one (case, adapter) cell. ``fate``: pass | fail | known | stale | weak | raised |
    crashed | timeout | skip | expected-raise (what the cell is made to show)."""
    ids = dict(env=env, case=case.name, adapter=adapter, framework=adapter.split("-")[0], framework_version=version)
    if fate == "skip":
        return [Result(**ids, quantity=Quantity.OUTCOME, verdict=Verdict.SKIP,
                       message=f"{adapter} does not support dtype {case.dtype}")]
    real = _adapter(adapter)
    momentum, eps = real.effective(case)
    out = Result(**ids, quantity=Quantity.OUTCOME, verdict=Verdict.PASS, message="returned normally")
    records = [out]
    repro = f'pytest "tests/parity/test_parity.py::test_parity[{adapter}-{case.name}]"'
    if fate in ("raised", "expected-raise"):
        out.verdict, out.exception_type, out.exception_stage = Verdict(fate), "ValueError", "call 0 (train)"
        out.exception_message = "Expected more than 1 value per channel when training"
        out.message = ("unexpected exception during call 0 (train): ValueError: Expected more than 1 value per "
                       "channel when training")
    elif fate in ("crashed", "timeout"):
        out.verdict, out.exit_code = Verdict(fate), -11 if fate == "crashed" else None
        out.message = "worker died with signal 11 (SIGSEGV)" if fate == "crashed" else "no answer within 300 s; " \
            "worker killed"
        out.stderr_tail = ("Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call "
                           "first):\n  File \"bn.py\", line 42 in forward")
    else:
        bad_q = {"fail": "running_var", "known": "y", "stale": None, "weak": "dgamma"}.get(fate)
        keys = [(q, i) for i, kind in enumerate(case.schedule) for q in Quantity.of_phase(kind)
                if (case.has_scale or q.base != "dgamma") and (case.has_center or q.base != "dbeta")
                if case.track_running_stats or not q.is_state
                if case.second_order is not None or q not in (Quantity.HVP_X, Quantity.HVP_GAMMA)]
        for q, s in keys:
            bad = bad_q is not None and (q == bad_q or (fate == "fail" and q == "y_eval"))
            m = _metrics(rng, case, q, bad)
            rec = Result(**ids, quantity=q, step=s, **m, verdict=Verdict.PASS)
            if bad and fate == "weak":  # within the bound, 40x to 1e4x a stable BN's error
                m = _metrics(rng, case, q, False)
                ratio = float(10 ** rng.uniform(1.6, 4))
                m.update(weak_ratio=ratio, stable_abs_err=m["max_abs_err"] / ratio)
                rec = Result(**ids, quantity=q, step=s, **m, verdict=Verdict.WEAK,
                             message=f"{q.label(s)}: within the bound but {ratio:.3g}x the error of a stable BN")
            elif bad:
                rec.verdict = Verdict.KNOWN if fate == "known" else Verdict.FAIL
                rec.message = f"{q.label(s)}: values differ\n  Mismatched elements: {m['mismatched']} / {m['total']}"
                if fate == "known":
                    rec.ledger = LedgerRef(id=f"{adapter}-sample-entry", kind="numerical weakness",
                                           reason="a made-up reason for the sample data",
                                           link="https://github.com/pytorch/pytorch/issues/5410", observed="sample",
                                           versions=">=0")
            records.append(rec)
        if fate == "stale":
            records.append(Result(**ids, quantity=None, covers=["dx", "dgamma"], verdict=Verdict.STALE,
                                  ledger=LedgerRef(id=f"{adapter}-stale-entry", kind="framework bug",
                                                   reason="fixed upstream", link="https://example.org/issue/1",
                                                   observed="sample", versions=">=0"),
                                  message=f"ledger entry '{adapter}-stale-entry' expects a difference in "
                                          "'dx|dgamma' here, but nothing differed"))
    for r in records:
        if r.verdict.fails_run:
            r.repro = repro
    records.append(Cell(**ids, verdict=Verdict.worst(r.verdict for r in records), case_params=case.summary(),
                        tags=list(case.tags), file=case.file, conventions=real.conventions.as_dict(),
                        settings=real.settings(case), precision=real.precision(case).as_dict(),
                        effective=Effective(momentum=momentum, eps=eps),
                        info={"compute_s": float(rng.uniform(0.001, 0.02))}, worker={"pid": 1000},
                        worker_env=dict(real.worker_env),
                        status=OutcomeStatus.RETURNED if fate not in ("crashed", "timeout") else OutcomeStatus(fate),
                        wall_s=float(rng.uniform(0.002, 0.05)), input_digests={"x": "0" * 16, "x_eval": "0" * 16}))
    return records


def header(env: str, adapters: list[str], status: str = "complete") -> Header:
    versions = {"bnparity": __version__, "numpy": "2.4.6"}
    for a in adapters:
        versions[a.split("-")[0]] = "2.13.0" if a.startswith("torch") else "1.0.0"
    return Header(env=env, status=status, started="2026-01-01T00:00:00+0000", finished="2026-01-01T00:05:00+0000",
                  versions=versions, cases_hash="0" * 64,
                  platform={"system": "Linux", "machine": "x86_64", "python": "3.11.7"}, mode="parity",
                  adapters=list(adapters), argv=["tests/parity"], timings={},
                  sample="made-up metrics from tests/report_sample.py; not a measurement of any framework")


def write(path: Path, head: Header | dict[str, Any], records: list[Record | dict[str, Any]]) -> Path:
    """A results file; records given as dicts are validated through the schema first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in [head, *records]:
            f.write(dumps(r if isinstance(r, Record) else parse(r)) + "\n")
    return path


def synthetic(out_dir: Path, envs: list[str], adapters: list[str] | tuple[str, ...] = ADAPTERS,
              cases: list[Case] | None = None, seed: int = 0, bad_fraction: float = 0.06,
              statuses: dict[str, str] | None = None) -> list[Path]:
    """One results file per environment under ``out_dir/<env>/results.jsonl``; returns their paths."""
    cases = cases if cases is not None else load_cases([REPO / "cases"])
    fates = ["fail", "known", "stale", "raised", "crashed", "timeout", "skip", "weak"]
    paths = []
    for k, env in enumerate(envs):
        rng = np.random.default_rng([seed, k])
        records: list[Record] = []
        for case in cases:
            for a in adapters:
                fate = str(rng.choice(fates)) if rng.random() < bad_fraction else "pass"
                records.extend(cell_records(case, a, env, "1.0.0" if not a.startswith("torch") else "2.13.0",
                                            rng, fate))
        status = (statuses or {}).get(env, "complete")
        paths.append(write(Path(out_dir) / env / "results.jsonl", header(env, list(adapters), status), records))
    return paths
