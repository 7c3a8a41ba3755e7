"""Reproducer scripts: ``bnparity repro CASE ADAPTER``.

A script is a template plus the case as JSON (``CASE_PLACEHOLDER``); the HTML report embeds
the templates and fills them in the same way, so a template depends on the adapter's name and
worker environment only, and making one never loads an adapter.

For ``torch`` the script needs only NumPy and PyTorch (and ml_dtypes for bfloat16 cases). It
is assembled from the harness's own source, copied in verbatim: the oracle (``reference``),
the seeded input generators (``harness.inputs``), ``harness.compare.ulp``, the adapter
dataclasses of ``harness.adapters.base``, the torch calls of ``harness.adapters.torch_adapter``,
``harness.cases.Case``'s properties, ``TorchAdapter``'s methods with those it inherits from
``Adapter``, and the printout of ``harness.repro_runtime``. Nothing here is a second copy to
keep in step: change the harness and the next script changes with it.

For any other adapter the script imports the installed harness and runs
``harness.repro_runtime.reproduce_in_process``: the adapter in this process, its worker
environment applied first.

Both print every quantity against the float64 oracle, with a digest of the observed bits that
equals the ``digest`` of the results file when the run is the same.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import json
import pprint
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

CASE_PLACEHOLDER = "__BNPARITY_CASE_JSON__"

# what the copied code uses from the standard library: the copied modules' own import lines are left
# out (they name the harness); tests/unit/test_repro.py runs ruff's undefined-name check on the script
_STANDALONE_IMPORTS = """\
import hashlib
import importlib.metadata
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple
"""


def _head(adapter_name: str, worker_env: dict[str, str], what: str, imports: str, numpy: bool) -> str:
    """Docstring, imports, the case, the adapter's name and its worker's environment (applied before NumPy)."""
    from harness.workers import worker_environment

    lit = json.dumps(str(adapter_name))  # a JSON string literal is a valid Python one
    return (
        f'#!/usr/bin/env python3\n"""bnparity reproducer: the case in CASE below, on adapter {lit}.\n\n'
        f"{what}\n\n"
        "Run it with `python THIS_FILE`. It prints, for every quantity, the observed value against\n"
        "the NumPy float64 oracle: largest absolute difference, the same in ULPs of the dtype at the\n"
        "quantity's scale, expected vs observed at the worst element, and a digest of the observed bits\n"
        "(equal to the results file's `digest` when the run is bit-identical). The harness's tolerance\n"
        'and verdict for each quantity are in the bnparity report.\n"""\n\n'
        f"from __future__ import annotations\n\n{imports}\n"
        f'CASE = json.loads(r"""\n{CASE_PLACEHOLDER}\n""")\n'
        f"ADAPTER = {lit}\n"
        f"WORKER_ENV = {json.dumps(worker_environment(worker_env), sort_keys=True)}\n"
        "os.environ.update(WORKER_ENV)  # before NumPy or the framework is imported, as the harness's worker does\n"
        + ("\nimport numpy as np  # noqa: E402\n" if numpy else "")
    )


# -- copying source ---------------------------------------------------------------------------------

def _defines(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def statements(module: ModuleType, names: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> str:
    """The module's top-level statements as written (with the comment lines just above each).

    Its docstring, imports and ``if TYPE_CHECKING:`` block are left out (the script imports what the
    copied code uses); ``names`` keeps only the statements that define those names, ``skip`` drops some.
    """
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    blocks, found = [], set()
    for i, node in enumerate(tree.body):
        if (i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            continue  # the docstring
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_type_checking(node):
            continue
        defined = _defines(node)
        if defined and all(n.startswith("__") for n in defined):
            continue  # __all__ and the like mean nothing in a script
        if (names is not None and not defined & set(names)) or defined & set(skip):
            continue
        found |= defined
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            first -= 1
        blocks.append("\n".join(lines[first:node.end_lineno]))
    missing = set(names or ()) - found
    if missing:
        raise LookupError(f"{module.__name__} defines no {sorted(missing)} at top level")
    return "\n\n\n".join(blocks)


def members(cls: type, names: tuple[str, ...]) -> str:
    """The source of ``cls``'s methods and properties ``names``, each from the class of its MRO that defines it.

    Indented for a class body; a comment names the class each run of them comes from.
    """
    out, last = [], None
    for name in names:
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None:
            raise LookupError(f"{cls.__qualname__} has no {name!r}")
        obj = vars(owner)[name]
        func = obj.fget if isinstance(obj, property) else obj
        code = textwrap.indent(textwrap.dedent(inspect.getsource(func)), "    ")
        where = f"    # from {owner.__module__}.{owner.__qualname__}\n" if owner is not last else ""
        out.append(where + code.rstrip())
        last = owner
    return "\n\n".join(out)


def _section(title: str, body: str) -> str:
    return f"\n\n# -- {title} {'-' * max(3, 96 - len(title))}\n\n{body}\n"


# -- the standalone torch script --------------------------------------------------------------------

# TorchAdapter's class attributes and methods that the copied run uses (from TorchAdapter or Adapter)
_TORCH_ATTRS = ("name", "framework", "conventions")
_TORCH_METHODS = ("setup", "build", "train_step", "eval_step", "frozen_step", "describe",
                  "run", "mapped", "effective", "settings", "precision", "versions", "distributions")
_BASE_NAMES = ("IN_WORKER", "Raises", "COMPUTES", "FROZEN_CALLS", "Conventions", "Precision", "Raised", "Observed",
               "Mapped")
_RUNTIME_NAMES = ("ORDER", "PARAM_QUANTITIES", "plain", "case_from_params", "oracle", "num", "settings_text", "show",
                  "reproduce")


def _case_defaults() -> dict[str, Any]:
    """``Case``'s field defaults as JSON data (the standalone script lays a case's parameters over them)."""
    from harness.cases import Case

    return Case.model_validate({"name": "defaults", "shape": [1, 1]}).model_dump(
        mode="json", exclude={"name", "shape", "file"})


@functools.cache
def _torch_body() -> str:
    import reference
    from harness import compare, inputs, repro_runtime
    from harness.adapters import base, torch_adapter
    from harness.cases import Case

    adapter = torch_adapter.TorchAdapter
    properties = tuple(n for n, v in vars(Case).items() if isinstance(v, property))
    attrs = "\n".join(f"    {a} = " + pprint.pformat(getattr(adapter, a), width=100).replace("\n", "\n    ")
                      for a in _TORCH_ATTRS)
    case_class = (
        f"DEFAULTS = {pprint.pformat(_case_defaults(), width=110, sort_dicts=True)}\n\n\n"
        "class Case(SimpleNamespace):\n"
        '    """harness.cases.Case without pydantic: fields as attributes, its properties as written."""\n\n'
        f"{members(Case, properties)}")
    adapter_class = (
        f"class {adapter.__name__}:\n"
        f'    """{adapter.__module__}.{adapter.__qualname__}: what the harness\'s worker calls, as written."""\n\n'
        f"{attrs}\n\n{members(adapter, _TORCH_METHODS)}")
    return "".join([
        _section("reference: the float64 oracle", statements(reference)),
        _section("harness.inputs: the seeded inputs", statements(inputs)),
        _section("harness.compare", statements(compare, ("ulp",))),
        _section("harness.adapters.base", statements(base, _BASE_NAMES)),
        _section("harness.adapters.torch_adapter: what the adapter does to torch",
                 statements(torch_adapter, skip=(adapter.__name__, "ADAPTER"))),
        _section("harness.cases.Case", case_class),
        _section("harness.adapters.torch_adapter.TorchAdapter, with what it inherits from Adapter", adapter_class),
        _section("harness.repro_runtime: the oracle over the steps, the printout", statements(
            repro_runtime, _RUNTIME_NAMES)),
        "\n\nif __name__ == \"__main__\":\n"
        f"    sys.exit(reproduce({adapter.__name__}(), case_from_params(CASE, DEFAULTS, Case), ADAPTER))\n",
    ])


def _torch_script(worker_env: dict[str, str] | None) -> str:
    from harness.adapters.torch_adapter import TorchAdapter

    what = ("Needs only NumPy and PyTorch (and ml_dtypes for bfloat16 cases): the harness's own code for the\n"
            "inputs, the oracle and the torch adapter is copied in below, verbatim.")
    env = TorchAdapter.worker_env if worker_env is None else worker_env
    return _head("torch", env, what, _STANDALONE_IMPORTS, numpy=True) + _torch_body()


STANDALONE = {"torch": _torch_script}  # adapters with a framework-only script; every other adapter runs in-process


def _in_process_script(adapter_name: str, worker_env: dict[str, str] | None) -> str:
    what = ("Needs the bnparity harness installed (pip install -e .) and the adapter's framework: the adapter\n"
            "runs in this process with its worker environment, on inputs rebuilt from the case's seed.")
    return (_head(adapter_name, worker_env or {}, what, "import json\nimport os\nimport sys\n", numpy=False)
            + "\nfrom harness.repro_runtime import reproduce_in_process  # noqa: E402\n\n"
            + "if __name__ == \"__main__\":\n    sys.exit(reproduce_in_process(CASE, ADAPTER))\n")


# -- the API the report and the CLI use -------------------------------------------------------------

def case_json(case: Any) -> str:
    """The case's parameters as the JSON a script embeds (``Case.summary()`` or a ``case_params`` dict)."""
    params = case.summary() if hasattr(case, "summary") else dict(case)
    return json.dumps(params, indent=1, sort_keys=True, ensure_ascii=True)


def template(adapter_name: str, worker_env: dict[str, str] | None = None, standalone: bool = True) -> str:
    """The script for ``adapter_name`` with ``CASE_PLACEHOLDER`` where the case JSON goes.

    ``worker_env`` is the adapter's worker environment (a results file's cell records carry it); the
    script applies it before anything imports a framework. Without it, the in-process script applies
    the adapter's own when it has loaded it, and the torch script uses ``TorchAdapter.worker_env``.
    Nothing here loads an adapter. ``standalone=False`` gives the in-process script even for adapters
    that have a standalone one.
    """
    if standalone and adapter_name in STANDALONE:
        return STANDALONE[adapter_name](worker_env)
    return _in_process_script(adapter_name, worker_env)


def fill(tmpl: str, case_text: str) -> str:
    return tmpl.replace(CASE_PLACEHOLDER, case_text, 1)


def script(case: Any, adapter_name: str, standalone: bool = True, worker_env: dict[str, str] | None = None) -> str:
    """A runnable reproducer for one (case, adapter) cell.

    ``case`` is a ``Case`` or a ``case_params`` dict from a results file.

        >>> text = script(load_cases(["cases"])[0], "torch")
        >>> Path("repro.py").write_text(text)   # then: python repro.py
    """
    return fill(template(adapter_name, worker_env, standalone), case_json(case))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bnparity repro",
                                description="Print a standalone script that reproduces one (case, adapter) cell.")
    p.add_argument("case", help="case name (from the catalogue)")
    p.add_argument("adapter", help="adapter name, e.g. torch, keras3-jax, flax-nnx")
    p.add_argument("--cases", action="append", default=None, metavar="PATH",
                   help="case file or folder (repeatable; default: ./cases)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="take the case's parameters from a results file instead (a run from another checkout)")
    p.add_argument("--in-process", action="store_true",
                   help="call the adapter through the harness even where a framework-only script exists")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write the script here instead of stdout")
    args = p.parse_args(argv)
    from harness.adapters.base import discover, load_spec

    known = discover()
    if args.adapter not in known:
        print(f"bnparity repro: unknown adapter {args.adapter!r}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    case: Any = None
    if args.results:
        from harness.report.model import load

        model = load([args.results])
        info = model.cases.get(args.case)
        case = info.params if info and info.params else None
        where = args.results
    else:
        from harness.cases import CaseError, load_cases

        where = ", ".join(args.cases or ["cases"])
        try:
            case = next((c for c in load_cases(args.cases or ["cases"]) if c.name == args.case), None)
        except CaseError as e:
            print(e, file=sys.stderr)
            return 2
    if case is None:
        print(f"bnparity repro: no case named {args.case!r} in {where}", file=sys.stderr)
        return 2
    try:  # the adapter's module imports no framework; the script applies its worker environment first
        worker_env = dict(getattr(load_spec(known[args.adapter]), "worker_env", {}) or {})
    except Exception as e:
        print(f"bnparity repro: adapter {args.adapter!r} does not load here ({type(e).__name__}: {e}); "
              "the script applies its worker environment once it does", file=sys.stderr)
        worker_env = None
    text = script(case, args.adapter, standalone=not args.in_process, worker_env=worker_env)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
