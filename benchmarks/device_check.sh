#!/usr/bin/env bash
# One command for a short lease of a GPU or TPU machine, within a time budget it keeps
# (TIME_BUDGET_S, default 480 s in all): the parity tests (stopped at PARITY_BUDGET_S, default a
# quarter of the budget), then one process per benchmark row (device_row.py) on the first device,
# most important first, each row skipped with a note in the JSON once the budget would not hold it:
#   1. CoST(b) R50 float32, conv_impl auto    2. CoST(b) bfloat16 auto
#   3. C2D R50 float32 auto                   4. C2D bfloat16 auto
#   5.. the other conv_impls (fold2d, fold2d_custom_grads, conv3d less what auto resolves to):
#       CoST(b) float32, CoST(b) bfloat16, C2D float32, C2D bfloat16
# Each row: 8x224x224 clips, batch 8 per device, the official SGD train step; compile time, median
# step time, clips/s, MFU (FLOPs of the compiled step from XLA's cost analysis / step time / the
# device's dense peak for the precision, benchmarks/device_peaks.py), peak device memory, and, in
# the `auto` rows, the largest batch that fits (doubling from 8, catching the out-of-memory error;
# under JAX's default GPU memory fraction, 75%: XLA_PYTHON_CLIENT_MEM_FRACTION moves it, and each
# row's device_limit_mb says what the allocator had). The JSON is rewritten after every row.
# Then `benchmarks/device_table.py OUTPUT_JSON` prints the table of benchmarks/README.md and what
# `auto` should be.
#
#   benchmarks/device_check.sh [OUTPUT_JSON]      (default benchmarks/results/device_check.json)
#
# Needs a Python with requirements-dev.txt and an accelerator build of jaxlib (`make venv-gpu` or
# `make venv-tpu` plus requirements-dev.txt, or `pip install -U "jax[cuda12]"`); $PYTHON picks the
# interpreter (default .venv/bin/python). Knobs (environment):
#   TIME_BUDGET_S=480  PARITY_BUDGET_S=TIME_BUDGET_S/4  TESTS="tests/test_models.py ..."  TESTS_K=
#   ARCHS=costb,c2d  PRECISIONS=float32,bfloat16 (or DTYPES)  IMPLS=auto,fold2d,fold2d_custom_grads,conv3d
#   BATCH=8 (per device)  FRAMES=8  SIZE=224  WIDTH=64 (model.base_channels)  REPEATS=5  MAX_ROWS=0 (all)
#   BATCH_SEARCH=auto (the auto rows) | first (row 1 only) | all | none   BATCH_TRIES=3 (CPU: 1)
#   MAX_BATCH=1024 (CPU: 2*BATCH)   SEARCH_BUDGET_S=TIME_BUDGET_S/8 (per row)
#   STAGE_BLOCKS= (R50's) | e.g. 1,1,1,1: blocks per stage (model.stage_blocks), every block inflated
#   ALLOW_CPU=1: run on a CPU (MFU against a measured float32 matmul; no device memory figures), e.g.
#     ALLOW_CPU=1 SIZE=32 FRAMES=4 WIDTH=8 BATCH=2 TESTS=tests/test_cost_layer.py \
#       TESTS_K=CoSTb-111 MAX_ROWS=2 benchmarks/device_check.sh /tmp/device_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PYTHON" benchmarks/device_check.py "$@"
