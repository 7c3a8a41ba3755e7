"""Case files: load, validate, expand.

A case file is TOML with an optional ``[defaults]`` table merged into every
case, any number of ``[[case]]`` tables, and any number of ``[[sweep]]``
tables that each expand one parameter over a list of values. Every error
names the file, the case and the field.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Dtype = Literal["float16", "bfloat16", "float32", "float64"]
NOT_CASE_FILES = {"known_differences.toml", "bench.toml"}  # the ledger and the benchmark configurations
NAME_RE = re.compile(r"^[A-Za-z0-9_.+]+$")


class CaseError(ValueError):
    """A case file is malformed; the message names file, case and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Normal(_Strict):
    kind: Literal["normal"]
    loc: float = 0.0
    scale: float = Field(1.0, ge=0)


class Uniform(_Strict):
    kind: Literal["uniform"]
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class Constant(_Strict):
    kind: Literal["constant"]
    value: float = 0.0


class Ramp(_Strict):
    """Evenly spaced values from start to stop over the flattened logical array."""

    kind: Literal["ramp"]
    start: float = 0.0
    stop: float = 1.0


class StudentT(_Strict):
    """Heavy-tailed: loc + scale * t(df)."""

    kind: Literal["student_t"]
    df: float = Field(2.0, gt=0)
    loc: float = 0.0
    scale: float = Field(1.0, ge=0)


Generator = Annotated[Normal | Uniform | Constant | Ramp | StudentT, Field(discriminator="kind")]


class ChannelOverride(_Strict):
    """Replace the values of some channels with another generator."""

    channels: list[Annotated[int, Field(ge=0)]]
    input: Generator


class Special(_Strict):
    """Plant non-finite values at logical indices of every training batch."""

    value: Literal["nan", "inf", "-inf"]
    index: list[Annotated[int, Field(ge=0)]]


class ExpectRaise(_Strict):
    type: str = Field(min_length=1)
    match: str = ""

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class ToleranceOverride(_Strict):
    factor: float = Field(gt=0)
    reason: str = Field(min_length=10)


class Case(_Strict):
    """One validated scenario. ``shape`` is logical: (N, C, *spatial)."""

    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    shape: tuple[Annotated[int, Field(ge=1)], ...]
    layout: Literal["channels_first", "channels_last"] = "channels_first"
    dtype: Dtype = "float32"
    param_dtype: Dtype | None = None
    momentum: Annotated[float, Field(ge=0, le=1)] | Literal["cumulative"] = 0.1
    eps: Annotated[float, Field(ge=0)] = 1e-5
    affine: bool = True
    track_running_stats: bool = True
    contiguous: bool = True
    steps: Annotated[int, Field(ge=0, le=10_000)] = 3
    seed: Annotated[int, Field(ge=0)] = 0
    input: Generator = Normal(kind="normal")
    eval_input: Generator | None = None
    channel_overrides: tuple[ChannelOverride, ...] = ()
    specials: tuple[Special, ...] = ()
    grad: Generator = Normal(kind="normal")
    gamma: Generator = Uniform(kind="uniform", low=0.5, high=1.5)
    beta: Generator = Normal(kind="normal", loc=0.0, scale=0.5)
    running_mean: Generator = Constant(kind="constant", value=0.0)
    running_var: Generator = Constant(kind="constant", value=1.0)
    adapters: tuple[str, ...] | None = None
    use_defaults: bool = False
    timeout: Annotated[float, Field(gt=0)] | None = None
    expect_raise: dict[str, ExpectRaise] = {}
    tolerance: ToleranceOverride | None = None
    sweep: dict[str, Any] | None = None
    file: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} may hold only letters, digits, '_', '.', '+'")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2:
            raise ValueError(f"needs at least (N, C), got {list(v)}")
        if math.prod(v) > 64 * 2**20:
            raise ValueError(f"{list(v)} has more than 64M elements")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        c = self.shape[1]
        for o in self.channel_overrides:
            bad = [ch for ch in o.channels if ch >= c]
            if bad:
                raise ValueError(f"channel_overrides: channels {bad} out of range for C={c}")
        for s in self.specials:
            if len(s.index) != len(self.shape) or any(i >= d for i, d in zip(s.index, self.shape)):
                raise ValueError(f"specials: index {s.index} outside logical shape {list(self.shape)}")
        if self.momentum == "cumulative" and not self.track_running_stats:
            raise ValueError("momentum='cumulative' needs track_running_stats")
        return self

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def count(self) -> int:
        """Values per channel in one batch: N * prod(spatial)."""
        return math.prod(self.shape) // self.shape[1]

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "channels_first" else -1

    @property
    def physical_shape(self) -> tuple[int, ...]:
        if self.layout == "channels_first":
            return self.shape
        return (self.shape[0], *self.shape[2:], self.shape[1])

    @property
    def resolved_param_dtype(self) -> str:
        if self.param_dtype:
            return self.param_dtype
        return "float64" if self.dtype == "float64" else "float32"

    def applies_to(self, adapter: str) -> bool:
        return self.adapters is None or any(fnmatch.fnmatchcase(adapter, p) for p in self.adapters)

    def summary(self) -> dict[str, Any]:
        """Plain-data view for results files and reports."""
        return self.model_dump(mode="json", exclude={"file"}, exclude_none=True)


def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # discriminated unions put the tag in the location: input.normal.scale -> input.scale
        loc = [p for p in loc if p not in {"normal", "uniform", "constant", "ramp", "student_t"}
               and not p.startswith("constrained-") and p not in {"function-after[_consistent(), Case]"}]
        field = ".".join(loc) or "(case)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        if e["type"] == "missing":
            msg = "required field is missing"
        got = e.get("input")
        got_s = "" if e["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{where}: field '{field}': {msg}{got_s}")
    return "\n".join(lines)


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise KeyError(dotted)
    d[keys[-1]] = value


def _label(v: Any) -> str:
    """A name-safe label: 1e-05 -> 1em5, 1e+07 -> 1e7, -2.5 -> m2.5, [2, 3] -> 2_3."""
    if isinstance(v, float):
        s = f"{v:g}"
        s = re.sub(r"e([+-])0*(\d)", lambda m: ("em" if m.group(1) == "-" else "e") + m.group(2), s)
    elif isinstance(v, list):
        s = "_".join(_label(x) for x in v)
    else:
        s = str(v)
    return re.sub(r"[^A-Za-z0-9.+]", "_", s.replace("-", "m"))


def _expand_sweep(raw: dict, path: Path, defaults: dict) -> list[tuple[str, dict]]:
    where = f"{path}: sweep {raw.get('name', '?')!r}"
    allowed = {"name", "param", "values", "base", "tags", "labels", "description"}
    extra = set(raw) - allowed
    if extra:
        raise CaseError(f"{where}: field '{sorted(extra)[0]}': unknown field (sweep fields: {sorted(allowed)})")
    for key in ("name", "param", "values"):
        if key not in raw:
            raise CaseError(f"{where}: field '{key}': required field is missing")
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise CaseError(f"{where}: field 'values': must be a non-empty list")
    labels = raw.get("labels") or [_label(v) for v in values]
    if len(labels) != len(values):
        raise CaseError(f"{where}: field 'labels': {len(labels)} labels for {len(values)} values")
    out = []
    for v, lab in zip(values, labels):
        body = copy.deepcopy(defaults)
        body.update(copy.deepcopy(raw.get("base", {})))
        body["name"] = f"{raw['name']}_{lab}"
        body["tags"] = list(dict.fromkeys([*body.get("tags", []), *raw.get("tags", []), raw["name"]]))
        try:
            _set_path(body, raw["param"], v)
        except KeyError:
            raise CaseError(f"{where}: field 'param': cannot set {raw['param']!r}") from None
        body["sweep"] = {"name": raw["name"], "param": raw["param"], "value": v}
        if raw.get("description") and not body.get("description"):
            body["description"] = raw["description"]
        out.append((f"{path}: case {body['name']!r} (sweep {raw['name']!r})", body))
    return out


def load_file(path: Path) -> list[Case]:
    """Load and validate every case of one file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise CaseError(f"{path}: not valid TOML: {e}") from None
    extra = set(raw) - {"defaults", "case", "sweep"}
    if extra:
        raise CaseError(f"{path}: top-level table '{sorted(extra)[0]}': unknown (allowed: defaults, case, sweep)")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CaseError(f"{path}: field 'defaults': must be a table")
    bodies: list[tuple[str, dict]] = []
    for i, body in enumerate(raw.get("case", [])):
        if not isinstance(body, dict):
            raise CaseError(f"{path}: case #{i + 1}: must be a table ([[case]])")
        merged = {**copy.deepcopy(defaults), **body}
        bodies.append((f"{path}: case {body.get('name', f'#{i + 1}')!r}", merged))
    for sw in raw.get("sweep", []):
        bodies.extend(_expand_sweep(sw, path, defaults))
    cases = []
    for where, body in bodies:
        body["file"] = str(path)
        try:
            cases.append(Case.model_validate(body))
        except ValidationError as e:
            raise CaseError(_format_errors(e, where)) from None
    return cases


def load_cases(paths) -> list[Case]:
    """Load every ``*.toml`` under the given files or folders; names must be unique."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.toml") if f.name not in NOT_CASE_FILES))
        elif p.exists():
            files.append(p)
        else:
            raise CaseError(f"{p}: no such case file or folder")
    seen: dict[str, str] = {}
    out: list[Case] = []
    for f in files:
        for c in load_file(f):
            if c.name in seen:
                raise CaseError(f"{f}: case {c.name!r}: field 'name': duplicate, already defined in {seen[c.name]}")
            seen[c.name] = str(f)
            out.append(c)
    return out


def cases_hash(paths) -> str:
    """sha256 over the case files' bytes, in sorted path order."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.glob("*.toml") if f.name != "bench.toml") if p.is_dir() else [p])
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
