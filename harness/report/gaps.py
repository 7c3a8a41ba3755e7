"""How far apart two adapters' outputs can be, from what results files hold.

Results keep metrics against each adapter's own oracle, not the arrays, so the
distance between two adapters' outputs is bounded, not measured:

    |a - b| <= |a - oracle_a| + |oracle_a - oracle_b| + |oracle_b - b|

per element, hence ``max|a - b| <= err_a + gap + err_b`` with ``err`` the recorded
``max_abs_err`` and ``gap = max|oracle_a - oracle_b|``, and by the same triangle
``max|a - b| >= gap - err_a - err_b``. The gap is zero when both adapters run under
the same effective momentum, eps and running-variance estimator; when they do not
(framework defaults, Bessel correction) it is recomputed here from the case
parameters with the float64 oracle, which needs no framework.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import inputs
from harness.cases import Case
from harness.expected import expected_quantities
from harness.report.model import Model, ReportCell
from harness.schema import Cell, Quantity

# (running_var_estimator, effective momentum or "cumulative", eps[, frozen_call where the case makes frozen calls or
# has virtual batches or replicas[, virtual_batch_update where it has virtual batches ("" with replicas)[,
# replica_running, replica_gradients where it has replicas]]])
Signature = tuple[Any, ...]


def signature(record: Cell | None) -> Signature | None:
    """The settings that decide a cell's oracle, from its cell record (None: skipped, or not recorded)."""
    if record is None:
        return None
    # conventions is the adapter's Conventions.as_dict(), a free-form dict in the schema
    est, m, eps = record.conventions.get("running_var_estimator"), record.effective.momentum, record.effective.eps
    if est is None or m is None or eps is None:
        return None
    sig = (str(est), m if isinstance(m, str) else float(m), float(eps))
    frozen = str(record.conventions.get("frozen_call") or "")
    if record.case_params.get("data_parallel"):  # replicas: which running statistics survive, how gradients reduce
        conv = record.conventions
        return (*sig, frozen, "", str(conv.get("replica_running") or "first"),
                str(conv.get("replica_gradients") or "sum"))
    if record.case_params.get("virtual_batch_size"):  # ghost BN: how the running statistics are updated, too
        return (*sig, frozen, str(record.conventions.get("virtual_batch_update") or "group_average"))
    if "frozen" in (record.case_params.get("calls") or ()):
        return (*sig, frozen)
    return sig


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| where NaN matches NaN and an infinity matches itself; a NaN against a number is inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same values (NaN where the other has NaN): their gap is 0 and one copy is enough."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def gap_key(quantity: str, step: int | None) -> str:
    """How a quantity at a step is named in the gap tables (the page's JavaScript builds the same key)."""
    return f"{quantity}@{'' if step is None else step}"


def oracle_gaps(case_params: dict[str, Any], sigs: list[Signature]) -> dict[str, dict[str, float]] | None:
    """``{"i,j": {"quantity@step": max|oracle_i - oracle_j|}}`` for every pair of distinct signatures.

    None when the case cannot be rebuilt by this version of the harness (a results file written
    by another version may hold fields this one does not know).

        >>> g = oracle_gaps(params, [("unbiased", 0.1, 1e-5), ("biased", 0.1, 1e-5)])
        >>> g["0,1"]["running_var@0"]   # Bessel's n/(n-1) on the stored variance
    """
    try:
        case = Case.model_validate(case_params)
        data = inputs.build(case)
        values = []
        for est, m, eps, *more in sigs:
            frozen, ghost, kept, reduce = (*more, "", "", "", "")[:4]
            exp = expected_quantities(case, data, est, m, eps, frozen_call=frozen or "batch_statistics",
                                      virtual_batch_update=ghost or "group_average",
                                      replica_running=kept or "first", replica_gradients=reduce or "sum")
            # a quantity the settings do not touch (train y and dx under another estimator) is kept once
            values.append({k: next((v[k] for v in values if k in v and _same(v[k], e.value)), e.value)
                           for (q, s), e in exp.items() for k in [gap_key(q, s)]})
            del exp  # the bounds, as large as the values: gone before the next signature's are computed
        del data
    except Exception:
        return None
    out: dict[str, dict[str, float]] = {}
    for i in range(len(sigs)):
        for j in range(i + 1, len(sigs)):
            out[f"{i},{j}"] = {k: 0.0 if values[i][k] is values[j][k] else _maxdiff(values[i][k], values[j][k])
                               for k in values[i] if k in values[j]}
    return out


_ORACLE_CODE = [*sorted((Path(__file__).parents[1]).glob("*.py")), *sorted((Path(__file__).parents[2] / "reference")
                                                                          .glob("*.py")), Path(__file__)]


class GapCache:
    """Oracle gaps per (case parameters, signatures), computed once per report, and with ``root`` kept on disk
    by content like the figures (``plots.PlotCache``), so that a re-render of unchanged results recomputes no
    oracle (at 100,000 records that was a quarter of the report's time). The key covers the case parameters,
    the signatures, the source of the oracle and of the harness around it (``_ORACLE_CODE``) and the NumPy
    version; an entry that cannot be read is computed again, and a cache that cannot be written costs only
    the speed."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._memo: dict[str, dict[str, dict[str, float]] | None] = {}
        self._code: bytes | None = None
        self.hits = 0

    def _path(self, key: str) -> Path:
        if self._code is None:
            h = hashlib.sha256(np.__version__.encode())
            for f in _ORACLE_CODE:
                h.update(f.name.encode() + f.read_bytes())
            self._code = h.digest()
        return self.root / f"gaps-{hashlib.sha256(self._code + key.encode()).hexdigest()[:32]}.json"

    def get(self, case_params: dict[str, Any], sigs: list[Signature]) -> dict[str, dict[str, float]] | None:
        key = json.dumps([case_params, sigs], sort_keys=True, default=str)
        if key in self._memo:
            return self._memo[key]
        path = self._path(key) if self.root is not None else None
        if path is not None:
            try:
                got = json.loads(path.read_text(encoding="utf-8"))
                if got is None or isinstance(got, dict):
                    self.hits += 1
                    self._memo[key] = got
                    return got
            except (OSError, ValueError):
                pass
        self._memo[key] = gaps = oracle_gaps(case_params, sigs)
        if path is not None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(gaps), encoding="utf-8")  # NaN and infinity as Python's json reads them
                os.replace(tmp, path)
            except OSError:
                pass
        return gaps


def bound(err_a: float | None, err_b: float | None, gap: float | None) -> tuple[float, float] | None:
    """(lower, upper) bound on max|a - b| from the two recorded errors and the oracle gap."""
    if err_a is None or err_b is None or gap is None:
        return None
    if any(math.isnan(v) for v in (err_a, err_b, gap)):
        return None
    return max(gap - err_a - err_b, 0.0), gap + err_a + err_b


class Portability:
    """Per case: the distinct oracle signatures of its cells (in column order) and the oracle gaps between them.

    ``compute=False`` leaves the gaps out (every pair with different settings is then "by convention");
    ``cache``: the folder the gaps are kept in by content (None: computed every time).
    """

    def __init__(self, model: Model, compute: bool = True, cache: Path | str | None = None):
        self.model = model
        self.cache = GapCache(cache) if compute else None
        self._of: dict[str, tuple[list[Signature], dict[str, dict[str, float]] | None]] = {}

    def of(self, case: str) -> tuple[list[Signature], dict[str, dict[str, float]] | None]:
        if case not in self._of:
            sigs: list[Signature] = []
            for env, adapter in self.model.columns:
                cell = self.model.cells.get((env, case, adapter))
                s = signature(cell.record) if cell else None
                if s is not None and s not in sigs:
                    sigs.append(s)
            params = self.model.cases[case].params
            gaps = self.cache.get(params, sigs) if len(sigs) > 1 and params and self.cache is not None else None
            self._of[case] = (sigs, gaps)
        return self._of[case]

    def signature_index(self, cell: ReportCell) -> int | None:
        """Which of its case's signatures a cell ran under (cells with the same index share an oracle)."""
        s = signature(cell.record)
        sigs = self.of(cell.case)[0]
        return sigs.index(s) if s is not None and s in sigs else None

    def pair(self, case: str, a: ReportCell, b: ReportCell, quantity: Quantity,
             step: int | None) -> PairBound | Unbounded:
        """How far apart a's and b's ``quantity`` at ``step`` can be, or why that cannot be said."""
        sa, sb = signature(a.record), signature(b.record)
        if sa is None or sb is None:
            return Unbounded("—", "no settings recorded (skipped or not run)")
        sigs, gaps = self.of(case)
        if sa == sb:
            gap: float | None = 0.0
        elif gaps is None or sa not in sigs or sb not in sigs:
            return Unbounded("differs by convention", "the oracle could not be rebuilt from the case here")
        else:
            i, j = sorted((sigs.index(sa), sigs.index(sb)))
            gap = (gaps.get(f"{i},{j}") or {}).get(gap_key(quantity, step))

        def err(cell: ReportCell) -> float | None:
            return next((r.max_abs_err for r in cell.results if r.quantity == quantity and r.step == step), None)

        ea, eb = err(a), err(b)
        b_ = bound(ea, eb, gap)
        if b_ is None or ea is None or eb is None or gap is None:
            return Unbounded("—", "an outcome without this quantity (raised or crashed)")
        return PairBound(gap, b_[0], b_[1], ea, eb, sa == sb)


@dataclass(frozen=True)
class PairBound:
    """lower <= max|a - b| <= upper, from the oracle gap and the two measured errors against their oracles."""

    gap: float
    lower: float
    upper: float
    err_a: float
    err_b: float
    same_settings: bool


@dataclass(frozen=True)
class Unbounded:
    """No bound: what to show instead, and why."""

    text: str
    why: str
