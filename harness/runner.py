"""Run one (case, adapter) cell: inputs, worker, oracle, comparison, ledger, records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import inputs
from harness.adapters.base import Adapter
from harness.cases import Case
from harness.compare import compare, describe, quantity_label
from harness.expected import expected_quantities
from harness.ledger import Entry
from harness.workers import Outcome, Workers

FAILING = ("fail", "stale", "raised", "crashed", "timeout")
VERDICTS = ("pass", "fail", "known", "stale", "raised", "expected-raise", "crashed", "timeout", "skip")


@dataclass
class CellResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    skip_reason: str | None = None

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == "result" and r["verdict"] in FAILING]

    def failure_text(self) -> str:
        return "\n\n".join(r["message"] for r in self.failures)


def _base(env: str, case: Case, adapter: Adapter, version: str | None) -> dict[str, Any]:
    return {"kind": "result", "env": env, "case": case.name, "adapter": adapter.name,
            "framework": adapter.framework, "framework_version": version}


def _metrics_fields(m) -> dict[str, Any]:
    return {"max_abs_err": m.max_abs_err, "max_rel_err": m.max_rel_err, "max_ulp_err": m.max_ulp_err,
            "threshold": m.threshold, "error_ratio": m.error_ratio, "worst_index": m.worst_index,
            "expected": m.expected, "observed": m.observed, "mismatched": m.mismatched,
            "total": m.total, "mismatch_kind": m.kind, "observed_dtype": m.observed_dtype}


def judge_raise(case: Case, adapter: str, outcome: Outcome) -> tuple[str, str]:
    """(verdict, message) of the outcome itself: returned / raised / expected-raise / crashed / timeout."""
    want = case.expect_raise.get(adapter)
    raised = outcome.observed.raised if outcome.observed else None
    if outcome.status != "returned":
        tail = outcome.stderr_tail.strip().splitlines()[-8:]
        return outcome.status, f"{outcome.message}" + ("\n  stderr tail:\n    " + "\n    ".join(tail) if tail else "")
    if raised is None:
        if want:
            return "fail", (f"expected {want.type} matching {want.match!r} but the call returned normally")
        return "pass", "returned normally"
    text = f"{raised.type}: {raised.message}"
    if want and raised.type == want.type and re.search(want.match, raised.message):
        return "expected-raise", f"raised as the case expects, during {raised.stage}: {text}"
    if want:
        return "raised", f"expected {want.type} matching {want.match!r}, but during {raised.stage}: {text}"
    return "raised", f"unexpected exception during {raised.stage}: {text}"


def run_cell(case: Case, adapter: Adapter, spec: str, workers: Workers, *, env: str,
             ledger: list[Entry], timeout: float, repro: str) -> CellResult:
    """Everything about one cell, as result records (one per quantity and step)."""
    version = adapter.framework_version()
    base = _base(env, case, adapter, version)
    res = CellResult()
    reason = adapter.available() or adapter.supports(case)
    if reason:
        res.skip_reason = reason
        res.records.append({**base, "quantity": "outcome", "step": None, "verdict": "skip", "message": reason})
        return res

    data = inputs.build(case)
    wait = workers.submit(adapter.name, spec, adapter.worker_env, case, data, case.timeout or timeout)
    momentum, eps = adapter.effective(case)
    # the oracle runs while the framework works in its worker
    expected = expected_quantities(case, data, adapter.conventions.running_var_estimator, momentum, eps)
    outcome = wait()
    obs = outcome.observed
    verdict, message = judge_raise(case, adapter.name, outcome)
    outcome_rec = {**base, "quantity": "outcome", "step": None, "verdict": verdict, "message": message}
    if obs is not None and obs.raised:
        outcome_rec.update(exception_type=obs.raised.type, exception_message=obs.raised.message,
                           exception_stage=obs.raised.stage)
    if outcome.status != "returned":
        outcome_rec.update(exit_code=outcome.exit_code, stderr_tail=outcome.stderr_tail)
    records = [outcome_rec]
    if obs is not None and verdict == "pass":
        for key, exp in expected.items():
            q, step = key
            label = quantity_label(q, step)
            rec = {**base, "quantity": q, "step": step}
            if key not in obs.arrays:
                rec.update(verdict="fail", mismatch_kind="missing", message=f"{label}: not returned by the adapter")
            else:
                arr = obs.arrays[key]
                m = compare(exp, arr)
                rec.update(_metrics_fields(m), digest=inputs.digest(arr))
                rec["verdict"] = "pass" if m.ok else "fail"
                rec["message"] = "" if m.ok else describe(label, m, exp.dtype)
            records.append(rec)

    _apply_ledger(case, adapter.name, version, ledger, records)
    for r in records:
        if r["verdict"] in FAILING and r.get("message"):
            r["message"] += f"\n  Reproduce: {repro}"
    cell = {"kind": "cell", "env": env, "case": case.name, "adapter": adapter.name,
            "framework": adapter.framework, "framework_version": version,
            "verdict": worst_verdict(r["verdict"] for r in records),
            "case_params": case.summary(), "tags": list(case.tags), "file": case.file,
            "conventions": adapter.conventions.as_dict(), "settings": adapter.settings(case),
            "effective": {"momentum": momentum, "eps": eps},
            "info": ({k: v for k, v in obs.info.items() if _jsonable(v)} if obs else {}),
            "worker": outcome.worker, "status": outcome.status, "wall_s": outcome.wall_s,
            "input_digests": data.digests}
    res.records = [*records, cell]
    return res


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def _apply_ledger(case: Case, adapter: str, version: str | None, ledger: list[Entry],
                  records: list[dict[str, Any]]) -> None:
    """fail -> known where an entry covers it; an applicable entry covering nothing -> stale."""
    entries = [e for e in ledger if e.applies(case, adapter, version)]
    used: set[str] = set()
    for r in records:
        if r["verdict"] in FAILING and r["verdict"] != "stale":
            explaining = [e for e in entries if e.covers(r["quantity"])]
            if explaining:  # every entry that explains a failure is in use, the first is shown
                r["verdict"] = "known"
                r["ledger"] = explaining[0].as_record()
                r["ledger_ids"] = [e.id for e in explaining]
                used.update(e.id for e in explaining)
    compared = {r["quantity"] for r in records if r["verdict"] not in ("skip",) and r["quantity"] != "outcome"}
    for e in entries:
        # an entry is judged only where what it covers was compared (not when the call raised or crashed)
        if e.id not in used and (any(e.covers(q) for q in compared) or e.covers("outcome")):
            records.append({**{k: records[0][k] for k in ("kind", "env", "case", "adapter", "framework",
                                                          "framework_version")},
                            "quantity": "|".join(e.quantity), "step": None, "verdict": "stale",
                            "ledger": e.as_record(),
                            "message": (f"ledger entry {e.id!r} expects a difference in {'|'.join(e.quantity)!r} here, "
                                        f"but nothing differed: the framework changed or the entry is too wide")})


_ORDER = {v: i for i, v in enumerate(["pass", "skip", "expected-raise", "known", "stale", "fail", "raised",
                                      "timeout", "crashed"])}


def worst_verdict(verdicts) -> str:
    return max(verdicts, key=lambda v: _ORDER.get(v, 0), default="pass")


def array_digests(obs) -> dict[str, str]:
    return {f"{q}@{s}": inputs.digest(np.asarray(a)) for (q, s), a in obs.arrays.items()}
