"""Writes legacy.pth / zip.pth / expected.npz with real torch (not run by the tests).

The same small MMAction2-style checkpoint is saved twice: once in torch's legacy (pre-1.6)
serialisation and once in the default zip format. Run it outside the repo's venv:

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python tests/testdata/torch_formats/generate.py
"""

from __future__ import annotations

import collections
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _checkpoint() -> dict:
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
  model.train()
  model(torch.randn(2, 3, 5, 5))  # Moves the BN statistics and num_batches_tracked off init.
  state = model.state_dict()  # OrderedDict with torch's _metadata attribute.
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state['extra.base'] = base
  state['extra.view'] = base[1:, ::2]  # Non-contiguous view sharing base's storage.
  state['extra.half'] = torch.linspace(-2, 2, 7, dtype=torch.float16)
  assert isinstance(state, collections.OrderedDict) and hasattr(state, '_metadata')
  assert not state['extra.view'].is_contiguous()
  meta = {'mmaction2_version': '0.24.1', 'epoch': 3, 'note': 'torch_formats fixture'}
  return {'meta': meta, 'state_dict': state}


def main() -> None:
  ckpt = _checkpoint()
  torch.save(ckpt, os.path.join(HERE, 'legacy.pth'), _use_new_zipfile_serialization=False)
  torch.save(ckpt, os.path.join(HERE, 'zip.pth'))
  np.savez(
    os.path.join(HERE, 'expected.npz'), **{k: v.numpy() for k, v in ckpt['state_dict'].items()}
  )
  for name in ('legacy.pth', 'zip.pth'):
    again = torch.load(os.path.join(HERE, name), weights_only=True)
    assert all(torch.equal(again['state_dict'][k], v) for k, v in ckpt['state_dict'].items())
  print(f'torch {torch.__version__}: wrote legacy.pth, zip.pth, expected.npz to {HERE}')


if __name__ == '__main__':
  main()
