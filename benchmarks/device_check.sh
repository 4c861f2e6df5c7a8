#!/usr/bin/env bash
# One command for a short lease of a GPU or TPU machine: the parity tests, then the model
# benchmark (every conv_impl, fp32 and bf16, batch 8 per device, one process per row so that
# each row's peak device memory is its own), all written into one JSON.
#
#   benchmarks/device_check.sh [OUTPUT_JSON]      (default benchmarks/results/device_check.json)
#
# Needs a Python with requirements-dev.txt and an accelerator build of jaxlib (e.g.
# `pip install -U "jax[cuda12]"` or `"jax[tpu]"`); $PYTHON picks the interpreter. ~10 minutes on
# one H200 (mostly compilation); set ARCHS, IMPLS, DTYPES, FRAMES, SIZE or TESTS to do less, and
# ALLOW_CPU=1 to try the script itself on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUTPUT=${1:-benchmarks/results/device_check.json}
ARCHS=${ARCHS:-c2d,costb}
IMPLS=${IMPLS:-fold2d,fold2d_custom_grads,conv3d}
DTYPES=${DTYPES:-float32,bfloat16}
FRAMES=${FRAMES:-8}
SIZE=${SIZE:-224}
TESTS=${TESTS:-tests/test_models.py tests/test_cost_layer.py tests/test_custom_grads.py tests/test_weights.py}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

platform=$("$PYTHON" -c 'import jax; print(jax.default_backend())')
if [ "$platform" = cpu ] && [ -z "${ALLOW_CPU:-}" ]; then
  echo "error: JAX sees no accelerator (backend cpu); install jax for your GPU/TPU first" >&2
  exit 2
fi
devices=$("$PYTHON" -c 'import jax; print(jax.device_count())')
batch=$((8 * devices))
echo "platform $platform, $devices device(s), batch $batch"

set +e
"$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$WORK/parity.xml" \
  $TESTS 2>&1 | tail -n 5
set -e

for arch in ${ARCHS//,/ }; do
  for impl in ${IMPLS//,/ }; do
    for dtype in ${DTYPES//,/ }; do
      "$PYTHON" benchmarks/model_speed.py --archs "$arch" --impls "$impl" --dtypes "$dtype" \
        --batch "$batch" --frames "$FRAMES" --size "$SIZE" --repeats 5 \
        --json "$WORK/speed_${arch}_${impl}_${dtype}.json" | tail -n 3 \
        || echo "{\"arch\": \"$arch\", \"impl\": \"$impl\", \"dtype\": \"$dtype\", \"failed\": true}" \
          > "$WORK/failed_${arch}_${impl}_${dtype}.json"
    done
  done
done

"$PYTHON" - "$WORK" "$OUTPUT" <<'PY'
import glob, json, os, sys
import xml.etree.ElementTree as ET
import jax

work, output = sys.argv[1:]
suite = ET.parse(os.path.join(work, 'parity.xml')).getroot()
suite = suite if suite.tag == 'testsuite' else suite[0]
failed = [
  f'{case.get("classname")}::{case.get("name")}'
  for case in suite.iter('testcase')
  if case.find('failure') is not None or case.find('error') is not None
]
rows, peaks = [], []
for path in sorted(glob.glob(os.path.join(work, 'speed_*.json'))):
  result = json.load(open(path))
  rows += result['rows']
  peaks.append(result['matmul_peak_gflops'])
rows += [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, 'failed_*.json')))]
report = {
  'platform': jax.default_backend(),
  'device': jax.devices()[0].device_kind,
  'device_count': jax.device_count(),
  'jax': jax.__version__,
  'parity_tests': {
    'total': int(suite.get('tests')),
    'failures': int(suite.get('failures')) + int(suite.get('errors')),
    'skipped': int(suite.get('skipped', 0)),
    'failed': failed,
  },
  'fp32_matmul_peak_gflops': max(peaks) if peaks else None,
  'rows': rows,
}
os.makedirs(os.path.dirname(output) or '.', exist_ok=True)
with open(output, 'w') as f:
  json.dump(report, f, indent=2)
print(f'parity tests: {report["parity_tests"]["total"]} run, '
      f'{report["parity_tests"]["failures"]} failed; {len(rows)} benchmark rows; wrote {output}')
PY
