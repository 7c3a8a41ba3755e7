"""Compiled and exported paths, torch side (harness/adapters/torch_paths.py): a training-mode export that declares
what it omits passes where its eager source does, and a converter's planted bug in the running update is flagged on
the running statistics and the eval calls that read them, not on the training outputs the runtime gets right."""

from __future__ import annotations

from harness.adapters.base import select
from harness.schema import Quantity, Verdict

CASES = """
[[case]]
name = "export_training_dense"
shape = [8, 3]
calls = ["train", "train", "eval", "frozen", "eval"]
running_var = { kind = "uniform", low = 0.5, high = 2.0 }

[[case]]
name = "export_training_conv_channels_last"
shape = [4, 3, 2, 3]
layout = "channels_last"
seed = 5
"""
RUNNING = {Quantity.RUNNING_MEAN, Quantity.RUNNING_VAR, Quantity.RUNNING_MEAN_FROZEN, Quantity.RUNNING_VAR_FROZEN,
           Quantity.RUNNING_MEAN_EVAL, Quantity.RUNNING_VAR_EVAL}


def test_a_training_export_that_declares_its_omissions_passes(run_parity):
    run = run_parity(CASES, ["NumpyBN", "TrainingExport"])
    assert run.result.ret == 0, run.result.stdout.str()
    cell = next(c for c in run.cells if c.adapter == "fake-export-training")
    assert (cell.path, cell.source) == ("exported", "fake-good")
    judged = {r.quantity for r in run.results(adapter="fake-export-training")}
    assert Quantity.Y in judged and Quantity.RUNNING_VAR_FROZEN in judged and Quantity.Y_EVAL in judged
    assert not judged & {Quantity.DX, Quantity.DGAMMA, Quantity.DBETA, Quantity.DX_FROZEN, Quantity.DX_EVAL}


def test_a_converter_that_inverts_momentum_is_flagged_on_the_running_statistics(run_parity):
    run = run_parity(CASES, ["TrainingExport", "ExportMomentumInverted"])
    assert run.result.ret == 1
    bad = {(r.case, r.quantity) for r in run.results(adapter="bug-export-momentum-inverted", verdict=Verdict.FAIL)}
    for case in ("export_training_dense", "export_training_conv_channels_last"):
        assert {(case, Quantity.RUNNING_MEAN), (case, Quantity.RUNNING_VAR), (case, Quantity.Y_EVAL)} <= bad
    assert {q for _, q in bad} <= RUNNING | {Quantity.Y_EVAL}  # y of the training calls is right
    assert all(r.verdict == Verdict.PASS for r in run.results(adapter="bug-export-momentum-inverted", quantity="y"))


def test_a_converter_that_keeps_the_biased_running_variance_is_flagged_there_only(run_parity):
    run = run_parity(CASES, ["ExportBiasedRunningVar"])
    assert run.result.ret == 1
    bad = {r.quantity for r in run.results(adapter="bug-export-biased-running-var", verdict=Verdict.FAIL)}
    assert Quantity.RUNNING_VAR in bad and Quantity.RUNNING_VAR_FROZEN in bad and Quantity.Y_EVAL in bad
    assert not bad & {Quantity.RUNNING_MEAN, Quantity.Y, Quantity.RUNNING_MEAN_EVAL}


def test_the_torch_paths_are_selected_by_path_kind_and_declare_their_source():
    from harness.adapters import torch_paths

    adapters = [torch_paths.TORCH_COMPILE, torch_paths.TORCH_COMPILE_FREEZING, torch_paths.TORCH_ONNXRUNTIME,
                torch_paths.TORCH_ONNX_REFERENCE, torch_paths.TORCH_ONNXRUNTIME_TRAINING]
    specs = {"torch": "m:t", **{a.name: f"m:{a.name}" for a in adapters}}
    path = {"torch": "eager", **{a.name: a.path for a in adapters}}
    assert list(select(specs, None, path.get)) == ["torch"]
    assert list(select(specs, "path:compiled", path.get)) == ["torch-compile", "torch-compile-freezing"]
    assert list(select(specs, "path:exported", path.get)) == ["torch-onnxruntime", "torch-onnx-reference",
                                                              "torch-onnxruntime-training"]
    assert {a.source for a in adapters} == {"torch"}


def test_keras_on_torch_compiled_is_keras3_torch_with_each_layer_call_under_torch_compile():
    import tomllib
    from pathlib import Path

    from harness.adapters import keras_torch_compile
    from harness.adapters.base import load_spec

    entry = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "entry-points"]["bnparity.adapters"]
    adapter = keras_torch_compile.ADAPTER
    source = load_spec(entry[adapter.source])
    assert load_spec(entry[adapter.name]) is adapter and adapter.name == "keras3-torch-compile"
    assert (adapter.path, source.path, source.name) == ("compiled", "eager", "keras3-torch")
    assert (adapter.framework, adapter.conventions) == (source.framework, source.conventions)
    # the Keras worker's backend, and inductor in the worker's one thread as for torch-compile
    assert adapter.worker_env["KERAS_BACKEND"] == "torch" and adapter.worker_env["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    assert adapter.no_second_order and "double backward" in adapter.no_second_order
    assert source.no_second_order is None
