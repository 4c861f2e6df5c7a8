"""Wrong configs fail before any work, with a message that says what to change."""

import glob
import importlib
import os
import sys

import pytest

from cost_jax import cli, main
from cost_jax.training import config_checks, evaluate, loop
from cost_jax.training.config_checks import ConfigError
from cost_jax.weights import download
from tests import train_testlib, zygote


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('data'))
  train_testlib.write_tiny_dataset(path)
  return path


@pytest.mark.parametrize(
  'overrides, devices, processes, message',
  [
    (
      dict(batch_size=6),
      4,
      1,
      r'batch_size / grad_accum_steps = 6/1.*device count=4.*'
      r'multiple of 4',
    ),
    (dict(batch_size=8, grad_accum_steps=3), 1, 1, r'batch_size=8 .*grad_accum_steps=3'),
    (dict(batch_size=16, grad_accum_steps=2), 4, 1, None),  # 8 per micro: ok
    (dict(batch_size=8, grad_accum_steps=2), 8, 1, r'= 8/2\).*device count=8.*multiple of 16'),
    (dict(batch_size=12), 1, 1, r'model.bn_group_size=8.*multiple of 8'),
    (dict(batch_size=8, eval_batch_size=6), 4, 1, r'eval_batch_size=6 .*device count=4'),
    (dict(batch_size=8, test_batch_size=3), 1, 2, r'test_batch_size=3 .*process count=2'),
    (dict(batch_size=8, test_views_per_chunk=4), 1, 1, r'test_views_per_chunk=4'),
  ],
)
def test_batching_checks(overrides, devices, processes, message):
  mode = 'test' if {'test_batch_size', 'test_views_per_chunk'} & set(overrides) else 'train'
  config = train_testlib.tiny_config('unused')
  config.model.bn_group_size = 8
  config.update(eval_batch_size=8, test_batch_size=8)
  config.update(overrides)
  if message is None:
    config_checks.check_batching(config, num_devices=devices, num_processes=processes, mode=mode)
    return
  with pytest.raises(ConfigError, match=message):
    config_checks.check_batching(config, num_devices=devices, num_processes=processes, mode=mode)


def test_choice_checks():
  config = train_testlib.tiny_config('unused')
  config.model.precision = 'float16'
  with pytest.raises(ConfigError, match="model.precision='float16'"):
    config_checks.check_model_and_optimizer(config)
  config = train_testlib.tiny_config('unused')
  config.init.resnet2d = '/nonexistent/resnet50.pth'
  with pytest.raises(ConfigError, match='init.resnet2d=.*no such file'):
    config_checks.check_model_and_optimizer(config)


@pytest.mark.parametrize(
  'change, message',
  [
    (
      lambda c: c.data.update(data_dir='/nonexistent/tfrecords'),
      r"data.data_dir='/nonexistent/tfrecords' does not exist",
    ),
    (
      lambda c: c.model.update(num_classes=5),
      r"split 'train' .* has 4 classes but model.num_classes=5; set model.num_classes=4",
    ),
    (lambda c: c.model.update(bn_group_size=3), r'bn_group_size=3'),
    (lambda c: c.update(batch_size=16), r"split 'train' .* has 8 videos; at least 16"),
    (lambda c: c.update(test_average='max'), r"test_average='max'"),
    (lambda c: c.data.update(crop_size=60), r'data.crop_size=60 must be at most data.train_scale'),
    (lambda c: c.data.update(val_short_side=40), r'crop_size=48 must be at most data.val_short'),
  ],
)
def test_train_fails_before_any_work(data_dir, tmp_path, change, message):
  config = train_testlib.tiny_config(data_dir)
  change(config)
  workdir = str(tmp_path / 'work')
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)  # nothing was written, nothing was compiled


def test_test_mode_needs_a_checkpoint(data_dir, tmp_path):
  config = train_testlib.tiny_config(data_dir)
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    evaluate.run_test_protocol(config, str(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='--checkpoint'):
    evaluate.run_test_protocol(config, str(tmp_path / 'w'), checkpoint=str(tmp_path / 'missing'))


def test_cluster_detection_and_distributed_flags():
  assert not main.cluster_detected({})
  assert not main.cluster_detected({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '1'})
  assert main.cluster_detected({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4'})
  assert main.cluster_detected({'OMPI_COMM_WORLD_SIZE': '2'})
  assert main.cluster_detected({'TPU_WORKER_HOSTNAMES': 'host-a,host-b'})
  assert not main.cluster_detected({'TPU_WORKER_HOSTNAMES': 'localhost'})
  assert not main.initialize_distributed(None, None, None, {})
  with pytest.raises(cli.UsageError, match='give all three'):
    main.initialize_distributed('127.0.0.1:1234', 2, None, {})


def test_official_configs_start_from_the_imagenet_resnet_as_the_official_ones():
  for path in sorted(glob.glob(os.path.join(train_testlib.REPO, 'configs', '*_*.py'))):
    name = os.path.basename(path)[:-3]
    if name.startswith(('demo_', 'finetune_', 'mit_', '__')):
      continue
    config = importlib.import_module(f'configs.{name}').get_config()
    depth = config.model.depth
    assert config.init.resnet2d == f'torchvision://resnet{depth}', name
    assert 'resnet' in download.TORCHVISION_FILES[f'resnet{depth}']


def test_unreachable_weights_fail_before_any_work_in_one_line(data_dir, tmp_path):
  url = f'http://127.0.0.1:{train_testlib.free_port()}/resnet50-0676ba61.pth'
  config = train_testlib.tiny_config(data_dir)
  config.init.resnet2d = url
  workdir = str(tmp_path / 'work')
  with pytest.raises(download.WeightsUnavailableError, match='unreachable'):
    loop.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)
  # From the command line: one line naming the URL and the way to pass a local file, status 2.
  config_file = train_testlib.write_config_file(str(tmp_path / 'cfg.py'), data_dir)
  proc = zygote.run(
    train_testlib.main_command(config_file, workdir, f'--config.init.resnet2d={url}'),
    cwd=train_testlib.REPO,
    env=train_testlib.env(),
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  error = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(error) == 1 and url in error[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert '--config.init.resnet2d=/path/to/resnet50-0676ba61.pth' in proc.stderr
  assert not os.path.exists(workdir)


def test_command_lines_report_a_users_mistake_in_one_line(capsys, tmp_path):
  from cost_jax import analyze, export, predict

  for module, argv in (
    (predict, ['--no_such_flag']),
    (predict, ['--checkpoint=x']),
    (analyze, ['--top_k=3']),
    (export, ['--checkpoint=x', 'extra']),
    (export, ['--format=onnx']),
  ):
    assert module.main(argv) == 2, (module.__name__, argv)
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
  assert predict.main(['--help']) == 0 and '--views_per_chunk' in capsys.readouterr().out
  # cost_jax.main: a misspelt config field and a missing config file.
  for flag in ('--config.batch_sizee=3', f'--config={tmp_path}/missing.py'):
    config = os.path.join(train_testlib.REPO, 'configs', 'costb_k400.py')
    proc = zygote.run(
      [
        sys.executable,
        '-m',
        'cost_jax.main',
        f'--config={config}',
        f'--workdir={tmp_path}/w',
        flag,
      ],
      cwd=train_testlib.REPO,
      env=train_testlib.env(),
      timeout=300,
    )
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and ('batch_size' in errors[0] or 'missing.py' in errors[0])
  assert not os.path.exists(tmp_path / 'w')
