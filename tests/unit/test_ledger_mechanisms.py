"""The ledger is keyed by mechanism: a FRESH case (in no catalogue file: another name, shape, seed, offset or
size, still inside an entry's ``[difference.when]``) that shows a documented mechanism comes out ``known``
on the real adapter, with the ledger as it is, and no entry goes stale on it.

One cell per (entry, adapter) that the installed framework versions make applicable, run through
``harness.runner.run_cell`` in worker processes like the parity suite. Marker ``frameworks``: tox's
``current`` env runs it, ``unit`` skips it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.cases import load_cases, load_file
from harness.ledger import load_ledger
from harness.runner import run_cell
from harness.schema import Result, Verdict
from tests.unit.conftest import installed_adapter

REPO = Path(__file__).resolve().parents[2]
LEDGER = load_ledger(REPO / "cases" / "known_differences.toml")
pytestmark = pytest.mark.frameworks

FRESH = """
[[case]]
name = "fresh_mask_all_masked_conv1d_channels_last"
shape = [3, 2, 4]
layout = "channels_last"
mask = { keep = 0.0 }
seed = 921

[[case]]
name = "fresh_mask_channel_dense"
shape = [10, 3]
mask = { keep = 0.5, masked_channels = [0] }
seed = 922

[[case]]
name = "fresh_mask_single_channel_conv2d_channels_last"
shape = [4, 1, 2, 2]
layout = "channels_last"
mask = { keep = 0.5 }
seed = 923

[[case]]
name = "fresh_mask_single_channel_dense"
shape = [5, 1]
mask = { keep = 0.6 }
seed = 924
[[case]]
name = "fresh_overflow_3e25"
shape = [12, 3, 2]
input = { kind = "normal", loc = 0.0, scale = 3e25 }
seed = 901

[[case]]
name = "fresh_offset_300"
shape = [48, 5]
input = { kind = "normal", loc = 300.0, scale = 0.5 }
seed = 903

[[case]]
name = "fresh_float64_offset_5e4"
dtype = "float64"
shape = [24, 3, 2]
input = { kind = "normal", loc = 5e4, scale = 2.0 }
seed = 904

[[case]]
name = "fresh_pair_offset_50"
shape = [2, 6]
input = { kind = "normal", loc = 50.0, scale = 1.0 }
seed = 905

[[case]]
name = "fresh_dp_pair_offset_50"
shape = [4, 6]
data_parallel = { replicas = 2, sync = false }
input = { kind = "normal", loc = 50.0, scale = 1.0 }
seed = 906

[[case]]
name = "fresh_constant_channel"
shape = [6, 3, 4]
channel_overrides = [{ channels = [2], input = { kind = "constant", value = 3.0 } }]
seed = 906

[[case]]
name = "fresh_second_order_conv"
shape = [3, 4, 4, 3]
layout = "channels_last"
second_order = { direction = { kind = "normal", loc = 0.3 } }
seed = 931

[[case]]
name = "fresh_second_order_bfloat16"
shape = [6, 4, 8]
dtype = "bfloat16"
precision = "mixed"
second_order = {}
seed = 932

[[case]]
name = "fresh_float64_momentum_0.2"
dtype = "float64"
shape = [10, 3, 3]
momentum = 0.2
seed = 907

[[case]]
name = "fresh_float16"
dtype = "float16"
shape = [6, 5, 2, 2]
seed = 908

[[case]]
name = "fresh_bfloat16"
dtype = "bfloat16"
shape = [6, 5, 3]
layout = "channels_last"
seed = 909

[[case]]
name = "fresh_bfloat16_channels_last_offset"
dtype = "bfloat16"
shape = [12, 3, 5]
layout = "channels_last"
input = { kind = "uniform", low = 4990.0, high = 5010.0 }
seed = 911

[[case]]
name = "fresh_float16_pure"
dtype = "float16"
precision = "pure"
shape = [24, 6]
seed = 912

[[case]]
name = "fresh_float16_wide"
dtype = "float16"
shape = [16, 3, 3]
input = { kind = "normal", loc = 0.0, scale = 2000.0 }
seed = 913

[[case]]
name = "fresh_constant_channel_eps0"
shape = [3, 2, 5, 1]
eps = 0.0
steps = 1
channel_overrides = [{ channels = [0], input = { kind = "constant", value = 3.0 } }]
seed = 914

[[case]]
name = "fresh_pair_eps0_momentum1"
shape = [1, 2]
eps = 0.0
momentum = 1.0
steps = 1
input = { kind = "normal", loc = 0.0, scale = 2.0 }
seed = 915

[[case]]
name = "fresh_float16_eps_1e9_momentum1"
dtype = "float16"
shape = [1, 3]
eps = 1e-9
momentum = 1.0
steps = 1
input = { kind = "normal", loc = 2.0, scale = 1.0 }
seed = 920

[[case]]
name = "fresh_float16_constant_n7_eps0"
dtype = "float16"
shape = [7, 2, 1, 1]
eps = 0.0
steps = 1
channel_overrides = [{ channels = [1], input = { kind = "constant", value = 3.0 } }]
seed = 917

[[case]]
name = "fresh_inf_input"
shape = [6, 3]
specials = [{ value = "inf", index = [2, 1] }]
seed = 910

[[case]]
name = "fresh_inf_input_float64"
shape = [5, 2, 3]
dtype = "float64"
momentum = 0.25
specials = [{ value = "-inf", index = [1, 0, 2] }]
steps = 3
seed = 911

[[case]]
name = "fresh_mask_float64_dense"
shape = [9, 2]
dtype = "float64"
input = { kind = "normal", loc = -500.0, scale = 3.0 }
mask = { keep = 0.6 }
steps = 2
seed = 925

[[case]]
name = "fresh_empty_conv2d_channels_last"
shape = [0, 3, 2, 5]
layout = "channels_last"
steps = 2
seed = 921

[[case]]
name = "fresh_empty_spatial_conv3d"
shape = [2, 2, 0, 3, 3]
steps = 1
seed = 922

[[case]]
name = "fresh_bfloat16_axis2_constant_channel"
shape = [6, 2, 3, 2]
axis = 2
dtype = "bfloat16"
track_running_stats = false
steps = 1
seed = 924
channel_overrides = [{ channels = [1], input = { kind = "constant", value = 0.0 } }]
gamma = { kind = "uniform", low = -2.0, high = 2.0 }

[[case]]
name = "fresh_empty_conv3d_channels_last"
shape = [0, 2, 2, 3, 4]
layout = "channels_last"
steps = 1
seed = 923

[[case]]
name = "fresh_offset_1e4_conv2d_channels_first"
shape = [6, 3, 3, 4]
input = { kind = "normal", loc = 1e4, scale = 1.0 }
steps = 2
seed = 941

[[case]]
name = "fresh_bfloat16_mixed_conv1d_offset"
dtype = "bfloat16"
precision = "mixed"
shape = [6, 3, 5]
input = { kind = "normal", loc = 1.0, scale = 2.0 }
seed = 941

[[case]]
name = "fresh_dense_two_steps"
shape = [12, 4]
steps = 2
seed = 942

[[case]]
name = "fresh_empty_untracked_conv1d"
shape = [0, 3, 4]
track_running_stats = false
steps = 1
seed = 943

[[case]]
name = "fresh_scale_only_float16_mixed_dense"
dtype = "float16"
precision = "mixed"
scale = true
center = false
shape = [6, 3]
seed = 944

[[case]]
name = "fresh_empty_batch_sequence"
shape = [0, 3, 4]
steps = 2
seed = 961

[[case]]
name = "fresh_batch1_conv2d"
shape = [1, 3, 1, 1]
seed = 962

[[case]]
name = "fresh_frozen_conv2d"
shape = [4, 3, 2, 2]
calls = ["train", "frozen", "eval"]
seed = 963

[[case]]
name = "fresh_default_init_dense"
shape = [7, 4]
gamma = { kind = "constant", value = 1.0 }
beta = { kind = "constant", value = 0.0 }
steps = 2
seed = 972

[[case]]
name = "fresh_renorm_unclipped"
shape = [9, 3]
input = { kind = "normal", loc = 1.5, scale = 2.0 }
renorm = { momentum = 0.3 }
steps = 2
seed = 971

[[case]]
name = "fresh_cumulative_dense"
shape = [10, 3]
momentum = "cumulative"
steps = 3
seed = 964

[[case]]
name = "fresh_conv3d_small"
shape = [2, 3, 2, 2, 3]
seed = 965

[[case]]
name = "fresh_untracked_dense"
shape = [6, 3]
track_running_stats = false
seed = 966

[[case]]
name = "fresh_affine_off_float16_mixed_conv2d"
dtype = "float16"
precision = "mixed"
affine = false
shape = [5, 2, 2, 3]
seed = 969

[[case]]
name = "fresh_scale_only_conv2d"
scale = true
center = false
shape = [4, 3, 2, 2]
seed = 968

[[case]]
name = "fresh_float16_pure_axis2_running_mean_4e4"
shape = [2, 3, 3, 2]
axis = 2
dtype = "float16"
precision = "pure"
steps = 0
seed = 973
gamma = { kind = "uniform", low = -2.0, high = 2.0 }
running_mean = { kind = "normal", loc = -40000.0, scale = 1.0 }
running_var = { kind = "uniform", low = 0.0, high = 1.0 }

[[case]]
name = "fresh_scale_only_float16_axis2_eval_cumulative"
shape = [1, 2, 1, 2]
axis = 2
dtype = "float16"
center = false
momentum = "cumulative"
steps = 0
seed = 974
channel_overrides = [{ channels = [0], input = { kind = "constant", value = 0.0 } }]
"""

# entry id -> [(adapter, fresh case)]: every mechanism entry the installed versions can apply has a row
CELLS: dict[str, list[tuple[str, str]]] = {
    "tf-moments-stop-gradient-second-order": [(a, "fresh_second_order_conv")
                                              for a in ("keras3-tensorflow", "tf-keras-nonfused", "tf-raw")],
    "torch-16bit-double-backward-in-half": [("torch", "fresh_second_order_bfloat16")],
    "torch-float32-variance-overflow": [("torch", "fresh_overflow_3e25")],
    "keras3-jax-float64-computed-in-float32": [("keras3-jax", "fresh_float64_momentum_0.2")],
    "keras3-torch-float64-computed-in-float32": [("keras3-torch", "fresh_float64_momentum_0.2")],
    "keras3-torch-one-pass-variance": [("keras3-torch", "fresh_offset_300"), ("keras3-torch", "fresh_pair_offset_50")],
    "keras3-float32-variance-overflow": [("keras3-tensorflow", "fresh_overflow_3e25"),
                                         ("keras3-jax", "fresh_overflow_3e25")],
    "keras3-torch-one-pass-variance-overflow-nan": [("keras3-torch", "fresh_overflow_3e25")],
    "tf-keras-nonfused-float64-decay-in-float32": [("tf-keras-nonfused", "fresh_float64_momentum_0.2")],
    "tf-keras-nonfused-assign-sub-inf": [("tf-keras-nonfused", "fresh_inf_input"),
                                         ("tf-keras-nonfused", "fresh_overflow_3e25")],
    "tf-keras-nonfused-assign-sub-inf-float64": [("tf-keras-nonfused", "fresh_inf_input_float64")],
    "keras3-mask-count-plus-epsilon": [("keras3-tensorflow", "fresh_mask_float64_dense")],
    "tf-keras-nonfused-float32-variance-overflow": [("tf-keras-nonfused", "fresh_overflow_3e25")],
    "tf-raw-float16-math-in-half": [("tf-raw", "fresh_float16")],
    "tf-raw-float32-variance-overflow": [("tf-raw", "fresh_overflow_3e25")],
    "flax-fast-variance-mean-offset": [("flax-linen", "fresh_offset_300"), ("flax-nnx", "fresh_float64_offset_5e4"),
                                       ("flax-nnx", "fresh_pair_offset_50"), ("flax-linen", "fresh_constant_channel")],
    "flax-dp-fast-variance-shard-offset": [("flax-linen-dp", "fresh_dp_pair_offset_50"),
                                           ("flax-nnx-dp", "fresh_dp_pair_offset_50")],
    "flax-fast-variance-overflow-nan": [("flax-nnx", "fresh_overflow_3e25")],
    "flax-twopass-float32-variance-overflow": [("flax-linen-twopass", "fresh_overflow_3e25")],
    "flax-linen-low-precision-dx-rounded-twice": [("flax-linen-twopass", "fresh_float16")],
    "flax-linen-low-precision-dx-rounded-twice-bfloat16": [("flax-linen", "fresh_bfloat16")],
    "torch-16bit-channels-last-backward": [("torch", "fresh_bfloat16_channels_last_offset")],
    "flax-nnx-low-precision-dx-rounded-twice": [("flax-nnx", "fresh_float16_pure")],
    "flax-nnx-eval-float16-overflow": [("flax-nnx-twopass", "fresh_float16_wide")],
    "constant-channel-eps0-mean-off-by-an-ulp": [("flax-linen-twopass", "fresh_constant_channel_eps0")],
    "tf-fused-constant-channel-eps0-mean-off-by-an-ulp": [("tf-fused", "fresh_float16_constant_n7_eps0")],
    "flax-nnx-eval-float16-eps-underflow": [("flax-nnx-twopass", "fresh_float16_eps_1e9_momentum1")],
    "folded-affine-eps0-zero-variance-nan": [("keras3-tensorflow", "fresh_pair_eps0_momentum1"),
                                             ("tf-raw", "fresh_pair_eps0_momentum1")],
    "keras3-empty-batch-nan-moving-statistics": [("keras3-jax", "fresh_empty_conv2d_channels_last")],
    "folded-form-empty-batch-nan-dgamma": [("keras3-torch", "fresh_empty_conv2d_channels_last"),
                                           ("tf-raw", "fresh_empty_conv2d_channels_last")],
    "tf-empty-batch-nan-moving-statistics": [("tf-keras-fused", "fresh_empty_conv2d_channels_last")],
    "tf-fused-empty-5d-dx-shape": [("tf-fused", "fresh_empty_conv3d_channels_last")],
    "torch-16bit-permuted-input-generic-path": [("torch", "fresh_bfloat16_axis2_constant_channel"),
                                                ("torch", "fresh_float16_pure_axis2_running_mean_4e4")],
    "tf-fused-empty-5d-ncdhw-eval-gradient-raises": [("tf-keras-fused", "fresh_empty_spatial_conv3d")],
    "flax-empty-batch-nan-batch-stats": [("flax-nnx", "fresh_empty_spatial_conv3d")],
    "flax-empty-batch-nan-dscale": [("flax-linen-twopass", "fresh_empty_conv2d_channels_last")],
    "keras3-mask-no-unmasked-value-zero-statistics": [("keras3-jax", "fresh_mask_all_masked_conv1d_channels_last")],
    "tf-keras-mask-no-unmasked-value-zero-statistics": [("tf-keras-nonfused",
                                                         "fresh_mask_all_masked_conv1d_channels_last")],
    "flax-mask-no-unmasked-value-nan-batch-stats": [("flax-nnx", "fresh_mask_channel_dense"),
                                                    ("flax-linen-twopass",
                                                     "fresh_mask_all_masked_conv1d_channels_last")],
    "keras3-mask-single-channel-raises": [("keras3-torch", "fresh_mask_single_channel_conv2d_channels_last"),
                                          ("keras3-jax", "fresh_mask_single_channel_conv2d_channels_last")],
    "keras3-tensorflow-mask-single-channel-axis1-raises": [("keras3-tensorflow", "fresh_mask_single_channel_dense")],
}
# the graph, compiled and exported TF paths (harness.adapters.tf_paths, tf_export): their rows run where
# BNPARITY_PATHS=1 (the environment that installs the export packages), the ids are checked everywhere
PATH_CELLS: dict[str, list[tuple[str, str]]] = {
    "xla-fused-batch-norm-one-pass-variance": [("tf-fused-xla", "fresh_offset_1e4_conv2d_channels_first"),
                                               ("tf-keras-fused-xla", "fresh_offset_1e4_conv2d_channels_first")],
    "tf2xla-fused-batch-norm-empty-batch-nan": [("tf-fused-xla", "fresh_empty_conv2d_channels_last")],
    "tf-xla-mean-by-reciprocal-constant-channel": [("keras3-tensorflow-xla", "fresh_constant_channel_eps0"),
                                                   ("tf-keras-nonfused-xla", "fresh_constant_channel_eps0"),
                                                   ("tf-raw-xla", "fresh_constant_channel_eps0")],
    "litert-converter-saturates-infinite-constant": [("keras3-tensorflow-litert", "fresh_pair_eps0_momentum1")],
    "keras3-float32-variance-overflow": [("keras3-tensorflow-xla", "fresh_overflow_3e25"),
                                         ("keras3-tensorflow-onnxruntime", "fresh_overflow_3e25")],
    "folded-affine-eps0-zero-variance-nan": [("keras3-tensorflow-xla", "fresh_pair_eps0_momentum1"),
                                             ("keras3-tensorflow-onnxruntime", "fresh_pair_eps0_momentum1"),
                                             ("tf-raw-xla", "fresh_pair_eps0_momentum1")],
    "tf-moments-stop-gradient-second-order": [(a, "fresh_second_order_conv")
                                              for a in ("keras3-tensorflow-xla", "tf-raw-function",
                                                        "keras3-tensorflow-onnxruntime", "keras3-tensorflow-litert")],
    "tf-keras-nonfused-float64-decay-in-float32": [("tf-keras-nonfused-xla", "fresh_float64_momentum_0.2")],
    "tf-keras-nonfused-assign-sub-inf": [("tf-keras-nonfused-xla", "fresh_inf_input")],
    "tf-keras-nonfused-float32-variance-overflow": [("tf-keras-nonfused-xla", "fresh_overflow_3e25")],
    "tf-keras-mask-no-unmasked-value-zero-statistics": [("tf-keras-nonfused-xla",
                                                         "fresh_mask_all_masked_conv1d_channels_last")],
    "tf-raw-float16-math-in-half": [("tf-raw-function", "fresh_float16"), ("tf-raw-xla", "fresh_float16")],
    "tf-raw-float32-variance-overflow": [("tf-raw-xla", "fresh_overflow_3e25")],
    "folded-form-empty-batch-nan-dgamma": [("tf-raw-xla", "fresh_empty_conv2d_channels_last")],
    "tf-empty-batch-nan-moving-statistics": [("tf-raw-function", "fresh_empty_conv2d_channels_last"),
                                             ("torch-nobuco", "fresh_empty_conv2d_channels_last")],
    "keras3-tensorflow-mask-single-channel-axis1-raises": [("keras3-tensorflow-xla",
                                                            "fresh_mask_single_channel_dense")],
}
# entries no fresh case can show (yet): the mechanism is not traced, and other draws of the same kind pass; each
# is judged in its evidence case, and its ledger text says so
BY_NAME: set[str] = {"keras3-pure-float16-moving-variance-overflow",
                     "torch-pure-float16-running-variance-update-overflows",
                     "tf-fused-float16-dx-overflow-constant-channel"}
# the compiled and exported torch paths (harness/adapters/torch_paths.py) have their rows here too
PATH_CELLS.update({
    "torch-compile-16bit-mixed-backward-statistics-in-half": [("torch-compile", "fresh_bfloat16_mixed_conv1d_offset")],
    "onnx-training-mode-population-running-variance": [("torch-onnxruntime-training", "fresh_dense_two_steps")],
    "onnx-float64-attributes-in-float32": [(a, "fresh_float64_momentum_0.2") for a in
                                           ("torch-onnxruntime", "torch-onnx-reference", "torch-onnxruntime-training",
                                            "torch-onnx2torch")],
    "onnxruntime-training-empty-batch-nan-running-statistics": [("torch-onnxruntime-training",
                                                                 "fresh_empty_conv2d_channels_last")],
    "torch-onnx-training-export-empty-untracked-sigfpe": [(a, "fresh_empty_untracked_conv1d") for a in
                                                          ("torch-onnxruntime-training", "torch-onnx2torch")],
    "torch-onnx-export-missing-bias-in-input-dtype": [(a, "fresh_scale_only_float16_mixed_dense") for a in
                                                      ("torch-onnxruntime", "torch-onnxruntime-training",
                                                       "torch-onnx2torch")] + [
        # bnparity fuzz's shrunk finding (an eval-only layer, channels at axis 2), which a case-name glob missed
        (a, "fresh_scale_only_float16_axis2_eval_cumulative")
        for a in ("torch-onnxruntime", "torch-onnxruntime-training")],
})
# the converters (harness/adapters/torch_convert.py: torch-onnx2torch, torch-nobuco), tox -e torch2141; the rows of the
# exporter's and Keras 2's entries that they inherit are in those entries' lists above
PATH_CELLS.update({
    "nobuco-keras2-nonfused-biased-moving-variance": [("torch-nobuco", "fresh_dense_two_steps")],
    "nobuco-keras2-nonfused-empty-batch-nan-dgamma": [("torch-nobuco", "fresh_empty_batch_sequence")],
    "nobuco-one-value-per-channel-trains": [("torch-nobuco", "fresh_batch1_conv2d")],
    "nobuco-keras-layer-float32": [("torch-nobuco", "fresh_float64_momentum_0.2")],
    "nobuco-frozen-layer-runs-in-inference-mode": [("torch-nobuco", "fresh_frozen_conv2d")],
    "nobuco-batch-norm-without-bias-refused": [("torch-nobuco", "fresh_scale_only_float16_mixed_dense")],
    "nobuco-batch-norm-without-running-statistics-refused": [("torch-nobuco", "fresh_untracked_dense")],
    "nobuco-cumulative-momentum-refused": [("torch-nobuco", "fresh_cumulative_dense")],
    "nobuco-batchnorm3d-unimplemented": [("torch-nobuco", "fresh_conv3d_small")],
    "onnx2torch-batch-norm-statistics-outputs-refused": [("torch-onnx2torch", "fresh_untracked_dense")],
    "onnx2torch-functional-batch-norm-weight-as-buffer": [("torch-onnx2torch", "fresh_scale_only_conv2d")],
    "onnx2torch-cumulative-momentum-exported-as-frozen-statistics": [("torch-onnx2torch", "fresh_cumulative_dense")],
    "onnx2torch-exported-affine-constants-in-input-dtype": [("torch-onnx2torch",
                                                             "fresh_affine_off_float16_mixed_conv2d")],
    "nobuco-keras2-nonfused-inf-moving-mean-nan": [("torch-nobuco", "fresh_inf_input")],
})
# eager mechanisms that the paths show too: the paths whose training calls are eager torch's (torch-compile-freezing,
# torch-onnxruntime, torch-onnx-reference; ONNX Runtime refuses bfloat16), inductor and ONNX Runtime where their own
# kernels share the mechanism, and Keras on torch under torch.compile, which traces the same Keras code
_EAGER_TRAINING = ("torch-compile-freezing", "torch-onnx-reference")
PATH_CELLS.update({
    "torch-float32-variance-overflow": [(a, "fresh_overflow_3e25") for a in (
        "torch-compile", "torch-compile-freezing", "torch-onnxruntime", "torch-onnx-reference",
        "torch-onnxruntime-training")],
    "torch-16bit-channels-last-backward": [(a, "fresh_bfloat16_channels_last_offset") for a in _EAGER_TRAINING],
    "torch-16bit-double-backward-in-half": [(a, "fresh_second_order_bfloat16") for a in _EAGER_TRAINING],
    # (torch-onnx-reference also fails y of the eval call here: onnx-reference-training-mode-statistics-in-bfloat16)
    "torch-16bit-permuted-input-generic-path-training-calls": [("torch-compile-freezing",
                                                                "fresh_bfloat16_axis2_constant_channel")],
    "keras3-torch-float64-computed-in-float32": [("keras3-torch-compile", "fresh_float64_momentum_0.2")],
    "keras3-torch-one-pass-variance": [("keras3-torch-compile", "fresh_offset_300")],
    "torch-compile-backward-reads-buffer-after-update": [("keras3-torch-compile", "fresh_renorm_unclipped")],
    "keras3-torch-one-pass-variance-overflow-nan": [("keras3-torch-compile", "fresh_overflow_3e25")],
    "keras3-mask-single-channel-raises": [("keras3-torch-compile", "fresh_mask_single_channel_dense")],
    "onnx-training-export-cumulative-momentum-traced-as-replace": [("torch-onnxruntime-training",
                                                                    "fresh_cumulative_dense")],
    "onnx2torch-deduplicated-initializers-statistics-never-update": [("torch-onnx2torch", "fresh_default_init_dense")],
    "onnx-reference-training-mode-statistics-in-bfloat16": [("torch-onnx-reference",
                                                             "fresh_bfloat16_axis2_constant_channel")],
})
# onnx2torch's converted graph feeds the input to a torch.nn.BatchNorm*d module (or F.batch_norm): eager torch's kernels
# on the same tensor, so eager torch's entries name it, and show on it
for _entry, _case in (("torch-float32-variance-overflow", "fresh_overflow_3e25"),
                      ("torch-16bit-channels-last-backward", "fresh_bfloat16_channels_last_offset"),
                      ("torch-16bit-double-backward-in-half", "fresh_second_order_bfloat16"),
                      ("torch-16bit-permuted-input-generic-path", "fresh_float16_pure_axis2_running_mean_4e4")):
    PATH_CELLS.setdefault(_entry, []).append(("torch-onnx2torch", _case))
ROWS = [(entry, adapter, case) for entry, cells in CELLS.items() for adapter, case in cells]
if os.environ.get("BNPARITY_PATHS") == "1":
    ROWS += [(entry, adapter, case) for entry, cells in PATH_CELLS.items() for adapter, case in cells]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fresh")
    (folder / "fresh.toml").write_text(FRESH)
    return {c.name: c for c in load_file(folder / "fresh.toml")}


def test_fresh_cases_are_not_in_the_catalogue(fresh):
    catalogue = load_cases([REPO / "cases"])
    shapes = {(c.shape, c.seed) for c in catalogue}
    assert not set(fresh) & {c.name for c in catalogue}
    assert not {(c.shape, c.seed) for c in fresh.values()} & shapes


def test_every_mechanism_entry_has_a_fresh_case():
    ids = {e.id for e in LEDGER}
    cells = set(CELLS) | set(PATH_CELLS)
    assert cells <= ids and BY_NAME <= ids, sorted((cells | BY_NAME) - ids)
    # the entries of older version sets are checked by their own env's parity run (versions exclude today's)
    older = {e.id for e in LEDGER if e.versions.startswith(("<", "==3.0"))}
    assert ids - cells - BY_NAME == older, sorted(ids - cells - BY_NAME - older)


@pytest.mark.parametrize("entry_id,adapter_name,case_name", ROWS, ids=[f"{e}:{a}:{c}" for e, a, c in ROWS])
def test_fresh_case_of_a_mechanism_is_known(fresh, workers, entry_id, adapter_name, case_name):
    adapter, spec = installed_adapter(adapter_name)
    entry = next(e for e in LEDGER if e.id == entry_id)
    case = fresh[case_name]
    version = adapter.framework_version()
    if not entry.applies(case, adapter_name, version):
        pytest.fail(f"{entry_id} does not apply to {case_name} on {adapter_name} {version}: its conditions "
                    f"({entry.when.describe() if entry.when else '-'}) or versions ({entry.versions}) miss it")
    res = run_cell(case, adapter, spec, workers, env="selftest", ledger=LEDGER, timeout=300, repro="")
    results = [r for r in res.records if isinstance(r, Result)]
    bad = [(r.quantity, r.step, r.verdict, r.message[:200]) for r in results if r.verdict.fails_run]
    assert not bad, bad
    known = [r for r in results if r.verdict == Verdict.KNOWN and entry_id in r.ledger_ids]
    assert known, f"{entry_id} explains nothing on {case_name} / {adapter_name}: " + str(
        sorted({(r.quantity, r.verdict) for r in results}))
