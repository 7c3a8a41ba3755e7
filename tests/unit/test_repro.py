"""The reproducer scripts (``bnparity repro``): made of the harness's own code, and bit-for-bit.

Without a framework: the standalone torch script holds the harness's source verbatim (the oracle,
the input generators, the torch adapter) and no copy of it in string literals; it passes ruff's
undefined-name check; its inputs, oracle and momentum mapping agree with the harness's on every
catalogue case; the in-process script runs a fake adapter; making a template loads no adapter.

With the frameworks (``tox -e current``, marker ``frameworks``, where ``BNPARITY_REQUIRE_FRAMEWORKS=1`` makes a
missing framework a failure; ``unit`` installs none and skips them): every installed adapter's
script prints, for a handful of cases, the digests the harness's own worker records for the cell;
the torch script runs with the harness unimportable.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import types
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import reference
from harness import inputs, repro, repro_runtime, runner
from harness.adapters import base, torch_adapter
from harness.cases import Case, load_cases
from harness.expected import expected_quantities
from harness.schema import Quantity, Result, Verdict
from harness.workers import Workers
from tests.unit.conftest import framework_adapters, installed_adapter

REPO = Path(__file__).resolve().parents[2]
CASES = {c.name: c for c in load_cases([REPO / "cases"])}

# run each script given on the command line in this one interpreter (a framework imports once, as in
# the harness's worker); "standalone" first makes the harness and the oracle package unimportable
RUNNER = """\
import runpy, sys
if sys.argv[1] == "standalone":
    sys.modules["harness"] = sys.modules["reference"] = None
for path in sys.argv[2:]:
    print("=== script", path, flush=True)
    try:
        runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    print("=== exit", code, flush=True)
"""

# the cases every adapter's script runs, where the case applies and the adapter supports it: float32
# channels_first rank 4 without gamma and beta, float32 channels_last, bfloat16 channels_last, and
# the cumulative average (torch only)
ADAPTER_CASES = ("affine_off", "conv2d_channels_last", "bfloat16_channels_last", "cumulative_average",
                 "dp2_local", "dp2_uneven_sync")  # (the last two: the distributed adapters, which run only those)
# the torch script against the torch adapter in-process: large values, a strided input, bfloat16 with
# channels_last, the cumulative average, and a case where torch raises as its conventions declare
TORCH_CASES = ("huge_float32", "noncontiguous", "bfloat16_channels_last", "cumulative_average", "batch1_dense")


def _case(name: str = "dense_small", **kw) -> Case:
    body = {"name": name, "shape": [16, 4], "seed": 3, "tags": ["structure", "dense"], **kw}
    return Case.model_validate(body)


def _digests(out: str) -> dict[str, str]:
    """{label: digest} from a script's printout."""
    got = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+ (?:of|after) call \d+ \((?:train|eval)\))\s+max\|diff\|.*digest ([0-9a-f]{16})", line)
        if m:
            got[m.group(1)] = m.group(2)
    return got


def _worker_env(text: str) -> dict[str, str]:
    return json.loads(re.search(r"^WORKER_ENV = (.*)$", text, re.M).group(1))


def _run(script: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "repro.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=tmp_path)


def _start(scripts: list[str], tmp_path: Path, standalone: bool) -> tuple[subprocess.Popen, list[Path]]:
    """Start one interpreter that runs every script in turn (see RUNNER)."""
    paths = []
    for i, text in enumerate(scripts):
        paths.append(tmp_path / f"repro_{i}.py")
        paths[-1].write_text(text)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, "standalone" if standalone else "in-process",
                             *map(str, paths)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])})
    return proc, paths


def _finish(proc: subprocess.Popen, paths: list[Path]) -> list[tuple[int, str]]:
    """(exit status, printout) of each script started by ``_start``."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    parts = re.split(r"^=== script .*\n", out, flags=re.M)[1:]
    assert len(parts) == len(paths), (out[-3000:], err[-3000:])
    results = []
    for part in parts:
        body, _, code = part.rpartition("=== exit ")
        results.append((int(code.strip()) if code.strip().lstrip("-").isdigit() else 1, body))
    return results


def _script_imports(text: str) -> set[str]:
    """Top-level package of every import statement in the script, wherever it is."""
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def _standalone_namespace(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The standalone torch script's definitions, without running it (it imports torch only when run)."""
    module = types.ModuleType("repro_under_test")  # its dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(repro.script(_case(), "torch"), "repro.py", "exec"), module.__dict__)
    return module.__dict__


# -- made of the harness's own code -------------------------------------------------------------

def test_torch_script_is_the_harness_source() -> None:
    text = repro.script(CASES["conv2d_channels_last"], "torch")
    compile(text, "repro.py", "exec")
    # the oracle, whole, and the inputs, the torch calls and the adapter's run: as written
    for module in (reference, inputs):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__:
                assert inspect.getsource(fn) in text, f"{module.__name__}.{name}"
    for fn in (torch_adapter.torch_build, torch_adapter.torch_call, torch_adapter.torch_step,
               torch_adapter.torch_tensor, repro_runtime.oracle, repro_runtime.show, repro_runtime.reproduce):
        assert inspect.getsource(fn) in text, fn.__name__
    for method in (base.Adapter.run, base.Adapter.mapped, torch_adapter.TorchAdapter.build):
        assert inspect.getsource(method) in text, method.__qualname__
    assert inspect.getsource(inputs).split("_STREAMS = ", 1)[1].split("\n\n")[0] in text
    # and nothing of the harness is imported
    assert not _script_imports(text) & {"harness", "reference", "pydantic"}, _script_imports(text)


def test_repro_holds_no_code_in_strings() -> None:
    """No copy of the oracle, the inputs or an adapter hides in a string literal of the script makers."""
    for path in (REPO / "harness" / "repro.py", REPO / "harness" / "repro_runtime.py"):
        source = path.read_text()
        assert "batch_stats" not in source and "DEFAULT_SPECS" not in source and "STREAMS" not in source
        for node in ast.walk(ast.parse(source)):  # a function, a loop, a NumPy or torch call: code, not glue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not re.search(r"^\s*(def|for|while|with)\s|\b(np|torch)\.", node.value, re.M), \
                    (path.name, node.value[:200])


def _ruff() -> str | None:
    return shutil.which("ruff") or next((str(p) for p in [Path(sys.executable).parent / "ruff"] if p.exists()), None)


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed (tox -e unit has it)")
@pytest.mark.parametrize("adapter,standalone", [("torch", True), ("torch", False), ("keras3-jax", True)])
def test_scripts_define_every_name_they_use(adapter: str, standalone: bool, tmp_path: Path) -> None:
    """Pyflakes' checks (undefined names, names defined twice) on the assembled script: the copied
    sections fit together, and the script imports what they use."""
    path = tmp_path / "repro.py"
    path.write_text(repro.script(CASES["affine_off"], adapter, standalone=standalone))
    res = subprocess.run([_ruff(), "check", "--isolated", "--no-cache", "--select", "F", "--ignore", "F401",
                          str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_copied_inputs_oracle_and_mapping_agree_with_the_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    """On every catalogue case: the script's case object has Case's properties, its inputs are the
    harness's bit for bit, its oracle is ``expected_quantities``' values bit for bit (every estimator),
    and its TorchAdapter maps momentum and eps as the real one."""
    ns = _standalone_namespace(monkeypatch)
    torch_real, torch_copy = torch_adapter.TorchAdapter(), ns["TorchAdapter"]()
    for case in CASES.values():
        if case.count * case.channels * max(case.steps, 1) > 200_000:
            continue  # conv2d_large and large_batch add time, not coverage
        copy = ns["case_from_params"](case.summary(), ns["DEFAULTS"], ns["Case"])
        for prop in ("rank", "channels", "count", "channel_axis", "physical_shape", "resolved_param_dtype"):
            assert getattr(copy, prop) == getattr(case, prop), (case.name, prop)
        want, got = inputs.build(case), ns["build"](copy)
        for name in ("x", "g", "x_eval", "g_eval", "gamma", "beta", "running_mean", "running_var"):
            a, b = getattr(want, name), getattr(got, name)
            assert inputs.digest(np.stack(a) if isinstance(a, list) and a else np.asarray(a)) == \
                inputs.digest(np.stack(b) if isinstance(b, list) and b else np.asarray(b)), (case.name, name)
        assert got.digests == want.digests and got.channel_axis == want.channel_axis
        assert asdict(torch_copy.mapped(copy)) == asdict(torch_real.mapped(case)), case.name
        momentum, eps = torch_real.effective(case)
        assert torch_copy.effective(copy) == (momentum, eps)
        updates = reference.GHOST_UPDATES if case.virtual_batch_size else ("group_average",)
        replicas = (itertools.product(reference.REPLICA_RUNNING, reference.REPLICA_GRADIENTS) if case.data_parallel
                    else [("first", "sum")])
        for estimator, update, (kept, reduce) in itertools.product(reference.ESTIMATORS, updates, replicas):
            conv = {"virtual_batch_update": update, "replica_running": kept, "replica_gradients": reduce}
            exp = expected_quantities(case, want, estimator, momentum, eps, **conv)
            # the reproducer's oracle has no second derivatives yet: a second-order case reproduces its first-order
            # calls
            exp = {k: e for k, e in exp.items() if k[0] not in ("hvp_x", "hvp_gamma")}
            ora = ns["oracle"](copy, got, momentum, eps, estimator, **conv)
            assert ora.keys() == exp.keys(), case.name
            for key, e in exp.items():
                assert np.array_equal(ora[key], e.value, equal_nan=True), (case.name, estimator, update, kept, reduce,
                                                                           key)


def test_template_loads_no_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report renders from results files alone: a template takes the worker env it is given."""
    def refuse(*a, **k):
        raise AssertionError("template() loaded the adapter registry")

    monkeypatch.setattr(base, "discover", refuse)
    monkeypatch.setattr(base, "load_spec", refuse)
    env = {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"}
    text = repro.template("keras3-jax", env)
    assert repro.CASE_PLACEHOLDER in text
    # the worker's environment: its thread counts, then the adapter's
    assert _worker_env(text) == {"BNPARITY_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    assert _worker_env(repro.template("some-third-party-adapter"))["OMP_NUM_THREADS"] == "1"
    assert _worker_env(repro.template("torch", {"OMP_NUM_THREADS": "7"}))["OMP_NUM_THREADS"] == "7"
    assert _worker_env(repro.template("torch"))["MKL_NUM_THREADS"] == "1"  # TorchAdapter.worker_env, not loaded
    text = repro.script(_case(), "keras3-jax", standalone=False, worker_env=env)
    assert text == repro.fill(repro.template("keras3-jax", env, standalone=False), repro.case_json(_case()))


def test_in_process_script_reproduces_the_harness(tmp_path: Path) -> None:
    """The generic script runs the adapter through the harness: same bits as an in-process harness run."""
    from tests.fakes import NumpyBN

    case = _case("repro_check", shape=[6, 3, 2], layout="channels_last", steps=2)
    text = repro.script(case, "fake-good")
    res = _run(text, tmp_path, {"BNPARITY_ADAPTERS": "tests.fakes:NumpyBN", "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    obs = NumpyBN().run(case, inputs.build(case))
    want = {Quantity(q).label(s): inputs.digest(a) for (q, s), a in obs.arrays.items()}
    assert _digests(res.stdout) == want
    assert "momentum (weight of new) 0.1" in res.stdout


def test_settings_print_as_a_person_wrote_them(capsys: pytest.CaptureFixture) -> None:
    """1 - 0.7 is 0.30000000000000004 in float64: the reproducer's header prints 0.3 (the records keep the float)."""
    from tests.fakes import NumpyBN

    class DecayOfOld(NumpyBN):  # Keras' convention: the momentum passed is 1 - the case's
        name = "fake-decay-of-old"
        conventions = base.Conventions(momentum_style="decay_of_old", running_var_estimator="unbiased",
                                       default_eps=1e-3, default_momentum=0.99, native_layout="channels_first")

        def new_weight(self, st):
            return 1.0 - st["momentum"]

    case = _case("momentum_07", momentum=0.7)
    adapter = DecayOfOld()
    assert adapter.settings(case)["momentum"] == 1 - 0.7 != 0.3  # the record keeps the exact float
    assert repro_runtime.reproduce(adapter, case, adapter.name) == 0
    out = capsys.readouterr().out
    assert 'settings as passed: {"momentum": 0.3, "eps": 1e-05, "axis": 1' in out, out
    assert "momentum (weight of new) 0.7, eps 1e-05" in out
    assert "30000000000000004" not in out

    num = repro_runtime.num
    assert (num(1 - 0.7), num(1 - 0.9), num(1 - 0.99), num(0.1 + 0.2)) == ("0.3", "0.1", "0.01", "0.3")
    assert (num(1e-5), num(1.5e-7), num(1e-3), num(0.0001), num(1.0), num(1e6), num(1e16)) == \
        ("1e-05", "1.5e-07", "0.001", "0.0001", "1", "1000000", "1e+16")
    assert (num(0.123456789012), num(float(np.float32(0.1))), num(-0.0)) == ("0.123456789012", "0.10000000149", "0")
    assert (num(float("nan")), num(float("-inf")), num(3), num("cumulative"), num(None)) == \
        ("nan", "-inf", "3", "cumulative", None)
    assert repro_runtime.settings_text({"momentum": 1 - 0.7, "eps": 1e-5, "axis": 1, "flags": {"fused": True},
                                        "shape": [2, 0.5], "name": None}) == \
        '{"momentum": 0.3, "eps": 1e-05, "axis": 1, "flags": {"fused": true}, "shape": [2, 0.5], "name": null}'


def test_script_survives_hostile_case_text(tmp_path: Path) -> None:
    params = {**_case().summary(), "description": 'x"""\n__import__("os")._exit(3)\n"""\\', "name": "n\ny"}
    text = repro.script(params, "torch")
    compile(text, "repro.py", "exec")
    ns: dict = {}
    head = text.split("\nADAPTER = ")[0]
    exec(compile(head, "head", "exec"), ns)
    assert ns["CASE"] == params


def test_repro_cli(capsys: pytest.CaptureFixture) -> None:
    assert repro.main(["batch1_dense", "torch", "--cases", str(REPO / "cases")]) == 0
    out = capsys.readouterr().out
    assert '"name": "batch1_dense"' in out and "import torch" in out
    assert repro.main(["conv2d_basic", "keras3-jax", "--cases", str(REPO / "cases")]) == 0
    out = capsys.readouterr().out  # the CLI, and only it, loads the adapter for its worker environment
    assert _worker_env(out)["KERAS_BACKEND"] == "jax" and "reproduce_in_process" in out
    assert repro.main(["no_such_case", "torch", "--cases", str(REPO / "cases")]) == 2
    assert repro.main(["batch1_dense", "no-such-adapter"]) == 2


# -- on the real frameworks -----------------------------------------------------------------------



def _adapter_names() -> list[str]:
    try:
        return sorted(framework_adapters())
    except Exception:  # a broken BNPARITY_ADAPTERS: the parity suite says so
        return []


@pytest.mark.frameworks
@pytest.mark.parametrize("name", _adapter_names())
def test_adapter_script_prints_the_harness_digests(name: str, tmp_path: Path) -> None:
    """Each installed adapter's script (standalone for torch, in-process otherwise) prints, per
    quantity, the digest the harness's own worker records for the cell (``runner.run_cell``)."""
    adapter, spec = installed_adapter(name)
    cases = [CASES[c] for c in ADAPTER_CASES if CASES[c].applies_to(name) and not adapter.supports(CASES[c])]
    assert cases, f"none of {ADAPTER_CASES} runs on {name}"
    standalone = name in repro.STANDALONE
    proc, paths = _start([repro.script(c, name, worker_env=adapter.worker_env) for c in cases], tmp_path, standalone)
    workers = Workers(log_dir=tmp_path / "workers", max_live=1)
    try:  # the harness's run of the same cells, in its worker, while the scripts run
        cells = [runner.run_cell(c, adapter, spec, workers, env="selftest", ledger=[], timeout=300, repro="")
                 for c in cases]
    finally:
        workers.close()
    for case, cell, (code, out) in zip(cases, cells, _finish(proc, paths)):
        records = [r for r in cell.records if isinstance(r, Result)]
        outcome = next(r for r in records if r.quantity == Quantity.OUTCOME)
        if outcome.exception_type:
            assert code == 1 and f"raised during {outcome.exception_stage}: {outcome.exception_type}:" in out
            continue
        assert outcome.verdict == Verdict.PASS, outcome.message
        want = {r.quantity.label(r.step): r.digest for r in records if r.digest}
        assert code == 0, out[-3000:]
        assert want and _digests(out) == want, (case.name, out[-3000:])


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[tuple[int, str], tuple[int, str]]]:
    """{case: ((status, printout) of the standalone script, the same of the in-process one)} for TORCH_CASES.

    The standalone scripts run where the harness and ``reference`` cannot be imported.
    """
    installed_adapter("torch")
    cases = [CASES[n] for n in TORCH_CASES]
    alone = _start([repro.script(c, "torch") for c in cases], tmp_path_factory.mktemp("alone"), standalone=True)
    via = _start([repro.script(c, "torch", standalone=False) for c in cases], tmp_path_factory.mktemp("via"),
                 standalone=False)
    return dict(zip(TORCH_CASES, zip(_finish(*alone), _finish(*via))))


@pytest.mark.frameworks
def test_torch_script_matches_the_adapter_bit_for_bit(torch_runs) -> None:
    """The framework-only script and the adapter-in-process script print the same comparison lines:
    same observed digests, same oracle."""
    strip = lambda s: [re.sub(r"\s+", " ", ln) for ln in s.splitlines() if "max|diff|" in ln]  # noqa: E731
    for name, ((code_a, out_a), (code_v, out_v)) in torch_runs.items():
        if name == "batch1_dense":
            continue
        assert code_a == code_v == 0, (name, out_a[-2000:], out_v[-2000:])
        assert _digests(out_a) and _digests(out_a) == _digests(out_v), name
        assert strip(out_a) == strip(out_v), name


@pytest.mark.frameworks
def test_torch_script_reports_the_expected_raise(torch_runs) -> None:
    for code, out in torch_runs["batch1_dense"]:
        assert code == 1
        assert "raised during call 0 (train): ValueError: Expected more than 1 value per channel" in out
        assert "(the adapter declares that one value per channel in training raises ValueError" in out
