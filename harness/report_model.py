"""Results files -> what the report shows: environments, cells, where a discrepancy starts, drift.

Everything here reads results records only (``harness.results.read``); nothing imports a
framework. Records of a kind this version does not know (``benchmark``, ...) are counted and
otherwise ignored, so newer results files still render.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.results import read

# severity order of runner.worst_verdict; an unknown future verdict sorts with the failures
SEVERITY = ("pass", "skip", "expected-raise", "known", "stale", "fail", "raised", "timeout", "crashed")
_RANK = {v: i for i, v in enumerate(SEVERITY)}
FAILING = ("fail", "stale", "raised", "crashed", "timeout")
DIFFERING = ("fail", "known")  # the values differ from the oracle (known: and the ledger says why)
TRAIN_ORDER = ("running_mean", "running_var", "y", "dx", "dgamma", "dbeta")
EVAL_ORDER = ("y_eval", "dx_eval")
QUANTITIES = ("outcome", *TRAIN_ORDER, *EVAL_ORDER)
STAGE = {"running_mean": "batch mean -> running_mean", "running_var": "batch variance -> running_var",
         "y": "normalized output y", "dx": "gradients (dx)", "dgamma": "gradients (dgamma)",
         "dbeta": "gradients (dbeta)", "y_eval": "eval output y", "dx_eval": "eval gradient dx"}


def rank(verdict: str) -> int:
    return _RANK.get(verdict, _RANK["fail"])


def worst(verdicts: Iterable[str]) -> str:
    return max(verdicts, key=rank, default="pass")


def num(v: Any) -> float | None:
    """A results-file number: floats, and the strings "nan" / "inf" / "-inf" JSON cannot hold."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def fmt_ulp(u: float | None) -> str:
    """Short ULP text for a matrix cell (mirrored by fmtUlp in report.js)."""
    if u is None or math.isnan(u):
        return ""
    if math.isinf(u):
        return "inf"
    if u == 0:
        return "0"
    if u < 0.01:
        return "<.01"
    if u < 10:
        return f"{u:.2g}"
    if u < 1000:
        return f"{u:.0f}"
    return f"{u:.1e}".replace("e+0", "e").replace("e+", "e")


def sort_key_quantity(rec: dict[str, Any]) -> tuple:
    """outcome first, then train steps in stage order, then eval, then anything else (stale globs)."""
    q, step = rec.get("quantity", ""), rec.get("step")
    if q == "outcome":
        return (0, 0, 0, q)
    if q in TRAIN_ORDER:
        return (1, step if isinstance(step, int) else 0, TRAIN_ORDER.index(q), q)
    if q in EVAL_ORDER:
        return (2, 0, EVAL_ORDER.index(q), q)
    return (3, 0, 0, str(q))


@dataclass
class Env:
    key: str  # unique within the report
    name: str
    path: str
    header: dict[str, Any]
    verdicts: Counter = field(default_factory=Counter)  # result records
    cell_verdicts: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)  # records of unknown kinds
    adapters: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.header.get("status", "no header") if self.header else "no header"

    @property
    def partial(self) -> bool:
        return self.status != "complete"

    @property
    def versions(self) -> dict[str, str]:
        return self.header.get("versions") or {}


@dataclass
class Cell:
    env: str
    case: str
    adapter: str
    results: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] | None = None  # the "cell" record (absent for skips and torn runs)

    @cached_property
    def verdict(self) -> str:
        """The cell's worst verdict (read after loading: cached)."""
        if self.meta and self.meta.get("verdict"):
            return worst([self.meta["verdict"], *(r.get("verdict", "pass") for r in self.results)])
        return worst(r.get("verdict", "pass") for r in self.results)

    @property
    def version(self) -> str | None:
        src = self.meta or (self.results[0] if self.results else {})
        return src.get("framework_version")

    def max_ulp(self, quantity: str | None = None) -> float | None:
        vals = [num(r.get("max_ulp_err")) for r in self.results
                if quantity is None or r.get("quantity") == quantity]
        vals = [v for v in vals if v is not None and not math.isnan(v)]
        return max(vals) if vals else None

    @property
    def outcome(self) -> dict[str, Any]:
        return next((r for r in self.results if r.get("quantity") == "outcome"), {})


@dataclass
class CaseInfo:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    file: str = ""

    @property
    def group(self) -> str:
        """The family a row is listed under: the case's first tag (the catalogue's file family)."""
        if self.tags:
            return str(self.tags[0])
        return Path(self.file).stem if self.file else "untagged"

    @property
    def sweep(self) -> dict[str, Any] | None:
        s = self.params.get("sweep")
        return s if isinstance(s, dict) and "name" in s else None

    def sort_key(self) -> tuple:
        sw = self.sweep
        if sw:
            x = sweep_x(sw.get("value"))
            return (str(sw["name"]), 0 if x is None else 1, x if x is not None else 0.0, self.name)
        return (self.name, 0, 0.0, self.name)


def sweep_x(value: Any, varying: int | None = None) -> float | None:
    """The number a swept value stands for on a plot axis (a list: its ``varying`` component)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list) and value:
        i = varying if varying is not None and varying < len(value) else 0
        return sweep_x(value[i])
    return None


@dataclass
class Model:
    envs: list[Env]
    cells: dict[tuple[str, str, str], Cell]  # (env key, case, adapter)
    cases: dict[str, CaseInfo]
    columns: list[tuple[str, str]]  # (env key, adapter), grouped by environment

    @property
    def adapters(self) -> list[str]:
        return sorted({a for _, a in self.columns})

    def env(self, key: str) -> Env:
        return next(e for e in self.envs if e.key == key)

    def groups(self) -> list[tuple[str, list[CaseInfo]]]:
        by: dict[str, list[CaseInfo]] = defaultdict(list)
        for c in self.cases.values():
            by[c.group].append(c)
        return [(g, sorted(cs, key=CaseInfo.sort_key)) for g, cs in sorted(by.items())]

    def tags(self) -> list[str]:
        return sorted({t for c in self.cases.values() for t in c.tags})


def resolve(paths: Iterable[Path | str]) -> list[Path]:
    """Results files named directly, or found in folders (DIR/results.jsonl, else DIR/*/results.jsonl, else deeper)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / "results.jsonl").is_file():
                found = [p / "results.jsonl"]
            else:
                found = sorted(p.glob("*/results.jsonl")) or sorted(p.rglob("results.jsonl"))
            if not found:
                raise FileNotFoundError(f"{p}: no results.jsonl in this folder or below")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or folder")
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def _unique_key(name: str, path: Path, taken: set[str]) -> str:
    key = name
    if key in taken:
        key = f"{name} ({path.parent.parent.name or path.parent})"
    n = 2
    base = key
    while key in taken:
        key, n = f"{base} #{n}", n + 1
    taken.add(key)
    return key


def _as_dict(r) -> dict[str, Any]:
    d = r.to_json_dict()
    if d.get("kind") == "result" and d.get("quantity") is None:
        d["quantity"] = "|".join(d.get("covers") or [])
    return d


def load(paths: Iterable[Path | str]) -> Model:
    envs: list[Env] = []
    cells: dict[tuple[str, str, str], Cell] = {}
    cases: dict[str, CaseInfo] = {}
    taken: set[str] = set()
    for path in resolve(paths):
        rf = read(path)
        head = rf.header.to_json_dict() if rf.header else {}
        records = [_as_dict(r) for r in rf.records]
        name = str(head.get("env") or path.parent.name)
        env = Env(_unique_key(name, path, taken), name, str(path), head)
        envs.append(env)
        adapters: dict[str, None] = dict.fromkeys(str(a) for a in head.get("adapters") or [])
        for r in records:
            kind = r.get("kind")
            if kind not in ("result", "cell") or not r.get("case") or not r.get("adapter"):
                env.ignored[str(kind)] += 1
                continue
            case, adapter = str(r["case"]), str(r["adapter"])
            adapters.setdefault(adapter)
            cell = cells.get((env.key, case, adapter))
            if cell is None:
                cell = cells[(env.key, case, adapter)] = Cell(env.key, case, adapter)
            info = cases.get(case)
            if info is None:
                info = cases[case] = CaseInfo(case)
            if kind == "result":
                cell.results.append(r)
                env.verdicts[str(r.get("verdict"))] += 1
            else:
                cell.meta = r
                if not info.params and isinstance(r.get("case_params"), dict):
                    info.params = r["case_params"]
                    info.tags = [str(t) for t in r.get("tags") or r["case_params"].get("tags") or []]
                    info.file = str(r.get("file") or "")
        env.adapters = sorted(adapters)
    for c in cells.values():
        c.results.sort(key=sort_key_quantity)
        next(e for e in envs if e.key == c.env).cell_verdicts[c.verdict] += 1
    columns = [(e.key, a) for e in envs for a in e.adapters]
    return Model(envs, cells, cases, columns)


# -- where a discrepancy starts ----------------------------------------------------------------

def _g(v: Any) -> str:
    x = num(v)
    if x is None:
        return "nan" if v == "nan" else "n/a"
    return f"{x:.6g}"


def first_divergence(cell: Cell) -> dict[str, Any] | None:
    """Which recorded quantity differs first (train steps in order, then eval), and what that implies.

    Per training step the stages are ordered as the computation runs: the batch mean (seen in
    running_mean), the batch variance (running_var), the output y, then the gradients. Only
    recorded quantities are used: a statement like "the batch mean is right" is inferred from y
    agreeing, and says so.
    """
    out = cell.outcome
    if out.get("verdict") in ("raised", "crashed", "timeout"):
        stage = out.get("exception_stage") or ("the worker" if out.get("verdict") != "raised" else "the call")
        what = (f"{out.get('exception_type')}: {str(out.get('exception_message', ''))[:300]}"
                if out.get("exception_type") else str(out.get("message", ""))[:300])
        return {"step": None, "quantity": "outcome", "stage": str(stage),
                "text": f"{out['verdict']} during {stage}: {what}", "also": [], "later": []}
    diff = [r for r in cell.results if r.get("verdict") in DIFFERING and r.get("quantity") != "outcome"]
    if not diff:
        return None
    train = [r for r in diff if r.get("quantity") in TRAIN_ORDER and isinstance(r.get("step"), int)]
    tracked = any(r.get("quantity") in ("running_mean", "running_var") for r in cell.results)
    if train:
        step = min(r["step"] for r in train)
        at = sorted((r for r in train if r["step"] == step), key=lambda r: TRAIN_ORDER.index(r["quantity"]))
        names = [r["quantity"] for r in at]
        first = at[0]
        bad = set(names)
        notes = []
        ok_y = "y" not in bad
        if not tracked:
            notes.append("the case does not track running statistics, so the batch statistics are seen only "
                         "through y and the gradients")
        if "running_mean" in bad and ok_y:
            notes.append("y agrees, so the batch mean used to normalize is right: the running-mean update "
                         "(momentum) is what differs")
        elif "running_var" in bad and "running_mean" not in bad and ok_y:
            notes.append("y and running_mean agree, so the batch variance used to normalize is right: what is "
                         "stored differs (variance estimator biased vs Bessel-corrected, or momentum)")
        elif bad & {"running_mean", "running_var"} and not ok_y:
            notes.append("the batch statistics and y both differ: the statistics themselves are computed "
                         "differently (precision, overflow, reduction order)")
        elif not ok_y and tracked:
            notes.append("the running statistics agree but y differs: the normalization itself differs "
                         "(eps, inverse square root, rounding of the output)")
        elif bad <= {"dx", "dgamma", "dbeta"}:
            notes.append("the forward pass agrees; the backward pass is the first to differ")
        if step > 0:
            notes.append(f"train steps 0..{step - 1} agree: the difference appears after {step} update(s) "
                         "(compounding through the running statistics or accumulated rounding)")
    else:
        ev = sorted((r for r in diff if r.get("quantity") in EVAL_ORDER), key=lambda r: EVAL_ORDER.index(r["quantity"]))
        at = ev or diff
        first, step, names = at[0], None, [r.get("quantity") for r in at]
        notes = ["every training-step quantity agrees: only eval mode differs (it normalizes with the running "
                 "statistics and the eval-mode eps)"] if ev else []
    q = str(first.get("quantity"))
    where = f"train step {step}" if step is not None else ("eval" if q in EVAL_ORDER else "")
    head = (f"first differs at {where}: {STAGE.get(q, q)}" if where else f"first differs in {q}")
    idx = first.get("worst_index")
    # compare.py records a NaN at the worst element as a missing value
    exp_s, obs_s = (("nan" if first.get(k) is None and idx else _g(first.get(k))) for k in ("expected", "observed"))
    detail = (f"{q}{list(idx) if idx else ''}: expected {exp_s}, observed {obs_s} "
              f"({fmt_ulp(num(first.get('max_ulp_err'))) or 'n/a'} ulp, {first.get('verdict')})")
    later = sorted({str(r.get("quantity")) for r in diff} - set(names))
    return {"step": step, "quantity": q, "stage": STAGE.get(q, q),
            "text": "; ".join([f"{head} — {detail}", *notes]), "also": names[1:], "later": later}


# -- drift between environments ------------------------------------------------------------------

def magnitude(u: float | None) -> str:
    """Order-of-magnitude class of an error in ULPs; everything within one ULP is one class."""
    if u is None:
        return "-"
    if math.isinf(u):
        return "inf"
    if u <= 1:
        return "<=1"
    return f"1e{math.floor(math.log10(u))}"


def orders_apart(a: float | None, b: float | None) -> bool:
    """Do two errors (ULPs) differ by a factor of 10 or more? Everything within one ULP counts as 1."""
    if a is None or b is None:
        return False
    if math.isinf(a) or math.isinf(b):
        return a != b
    return abs(math.log10(max(a, 1.0)) - math.log10(max(b, 1.0))) >= 1.0


def drift(model: Model) -> list[dict[str, Any]]:
    """(case, adapter) cells whose verdict or error order of magnitude differs between environments.

    A skipped cell (adapter not installed there, dtype unsupported) is not a behaviour and is left
    out of the comparison, like a cell that did not run.
    """
    by: dict[tuple[str, str], dict[str, Cell]] = defaultdict(dict)
    for (env, case, adapter), cell in model.cells.items():
        if cell.verdict != "skip":
            by[(case, adapter)][env] = cell
    rows = []
    for (case, adapter), per_env in sorted(by.items()):
        if len(per_env) < 2:
            continue
        verdicts = {e: c.verdict for e, c in per_env.items()}
        ulps = [c.max_ulp() for c in per_env.values()]
        apart = any(orders_apart(a, b) for i, a in enumerate(ulps) for b in ulps[i + 1:])
        if len(set(verdicts.values())) == 1 and not apart:
            continue
        per_q: dict[tuple, set[str]] = defaultdict(set)
        for c in per_env.values():
            for r in c.results:
                per_q[(r.get("quantity"), r.get("step"))].add(str(r.get("verdict")))
        changed = sorted({str(q) for (q, _), vs in per_q.items() if len(vs) > 1})
        rows.append({"case": case, "adapter": adapter, "changed": changed,
                     "values": {e: {"verdict": c.verdict, "ulp": c.max_ulp(), "version": c.version}
                                for e, c in per_env.items()},
                     "what": ("verdict" if len(set(verdicts.values())) > 1 else "error magnitude")})
    return rows


SAFE_LINK = re.compile(r"^https?://[^\s\"'<>]+$")


def safe_link(link: Any) -> str | None:
    """Only http(s) links become anchors: a results file must not plant ``javascript:`` URLs."""
    return link if isinstance(link, str) and SAFE_LINK.match(link) else None
