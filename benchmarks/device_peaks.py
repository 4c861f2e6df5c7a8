"""Peak dense FLOP/s of common accelerators, per device, for the MFU of `device_check.sh`.

MFU = FLOPs of one train step (XLA's cost analysis of the compiled step) / the step's median
time / the peak of the arithmetic the step's `model.precision` runs at on that device:

* `bfloat16`: the dense bf16 tensor-core / MXU peak (bf16 inputs, fp32 accumulation).
* `float32` (the default policy, `cost_jax/models/precision.py`): on NVIDIA GPUs with TF32 (Ampere
  and later) the dense TF32 tensor-core peak, since the policy multiplies in TF32 there; on GPUs
  without TF32 (V100) the fp32 peak; on TPUs the bf16 peak / 3, since the policy multiplies in
  three bf16 passes (`Precision.HIGH`).
* `float32_full` (`Precision.HIGHEST`): the fp32 (CUDA-core) peak on GPUs; the bf16 peak / 6 on
  TPUs (six bf16 passes).

Every figure is the vendor's dense number (data sheets quote the tensor-core figures "with
sparsity", twice the dense ones; the dense half is used here). On a CPU there is no table: the
peak is measured by `device_row.py --probe` (a large float32 matmul) and labelled as measured.
Devices are matched by key in `jax.devices()[0].device_kind` as a whole word (no letter or
digit either side: 'L4' does not match 'L40S'), first match wins, so more specific keys come
first. A device missing here gets no MFU (null), not a guess.
"""

from __future__ import annotations

import re
from typing import NamedTuple

TERA = 1e12


class Peak(NamedTuple):
  keys: tuple[str, ...]  # substrings of device_kind
  name: str
  bf16: float | None  # dense TFLOP/s; None: no bf16 matrix unit
  tf32: float | None  # dense TFLOP/s; None: no TF32 (the float32 policy then runs in fp32)
  fp32: float | None  # TFLOP/s of plain fp32 (CUDA cores); None on TPU
  source: str


GPU_PEAKS = (
  # NVIDIA H100 Tensor Core GPU data sheet: SXM 989 TF32 / 1,979 BF16 "with sparsity", 67 FP32
  # (dense 494.7 / 989.4 in NVIDIA's Hopper architecture whitepaper); PCIe 756 / 1,513 with
  # sparsity, 51 FP32; NVL 835 / 1,671 with sparsity, 60 FP32. benchmarks/feeding.py uses the same.
  Peak(('H100 PCIe',), 'H100 PCIe', 756.0, 378.0, 51.0, 'NVIDIA H100 data sheet, PCIe'),
  Peak(('H100 NVL',), 'H100 NVL', 835.5, 417.5, 60.0, 'NVIDIA H100 data sheet, NVL'),
  Peak(('H100',), 'H100 SXM', 989.4, 494.7, 67.0, 'NVIDIA H100 data sheet, SXM'),
  # NVIDIA H200 Tensor Core GPU data sheet: SXM as the H100 SXM (989 TF32 / 1,979 BF16 with
  # sparsity, 67 FP32); NVL 835 / 1,671 with sparsity, 60 FP32.
  Peak(('H200 NVL',), 'H200 NVL', 835.5, 417.5, 60.0, 'NVIDIA H200 data sheet, NVL'),
  Peak(('H200',), 'H200 SXM', 989.4, 494.7, 67.0, 'NVIDIA H200 data sheet, SXM'),
  # NVIDIA A100 Tensor Core GPU data sheet (40 GB and 80 GB, SXM and PCIe alike): TF32 156,
  # BF16 312 dense (312 / 624 with sparsity), FP32 19.5.
  Peak(('A100',), 'A100', 312.0, 156.0, 19.5, 'NVIDIA A100 data sheet'),
  # NVIDIA L4 data sheet: TF32 120, BF16 242 "with sparsity"; FP32 30.3.
  Peak(('L4',), 'L4', 121.0, 60.0, 30.3, 'NVIDIA L4 data sheet'),
  # NVIDIA Ampere GA102 architecture whitepaper, GeForce RTX 3090: TF32 tensor 35.6 dense,
  # BF16 tensor with FP32 accumulate 71 dense (GeForce accumulates fp32 at half rate), FP32 35.6.
  Peak(('RTX 3090',), 'RTX 3090', 71.0, 35.6, 35.6, 'NVIDIA GA102 whitepaper'),
  # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: TF32 tensor 82.6 dense,
  # BF16 tensor with FP32 accumulate 165.2 dense, FP32 82.6.
  Peak(('RTX 4090',), 'RTX 4090', 165.2, 82.6, 82.6, 'NVIDIA Ada whitepaper'),
  # NVIDIA V100 data sheet: FP32 15.7 (SXM2) / 14 (PCIe) / 16.4 (V100S); no TF32 and no bf16
  # tensor cores (its 125 TFLOP/s are fp16), so no bf16 MFU.
  Peak(('V100S',), 'V100S PCIe', None, None, 16.4, 'NVIDIA V100 data sheet'),
  Peak(('V100-PCIE', 'V100 PCIe'), 'V100 PCIe', None, None, 14.0, 'NVIDIA V100 data sheet'),
  Peak(('V100',), 'V100 SXM2', None, None, 15.7, 'NVIDIA V100 data sheet'),
)

TPU_PEAKS = (
  # Google Cloud TPU system-architecture pages, "peak compute per chip (bf16)"; JAX shows one
  # device per chip (v4 and v5p: both TensorCores as one megacore device).
  Peak(('TPU v5 lite', 'TPU v5e'), 'TPU v5e', 197.0, None, None, 'Cloud TPU v5e docs'),
  Peak(('TPU v5p', 'TPU v5'), 'TPU v5p', 459.0, None, None, 'Cloud TPU v5p docs'),
  Peak(('TPU v6 lite', 'TPU v6e', 'TPU v6'), 'TPU v6e', 918.0, None, None, 'Cloud TPU v6e docs'),
  Peak(('TPU v4',), 'TPU v4', 275.0, None, None, 'Cloud TPU v4 docs'),
)

CONVENTION = (
  'dense peaks; bfloat16: bf16 tensor-core/MXU peak; float32: TF32 peak on NVIDIA GPUs with TF32 '
  '(fp32 peak without), bf16 peak / 3 on TPU (3-pass); float32_full: fp32 peak on GPU, bf16 peak '
  '/ 6 on TPU; CPU: a measured float32 matmul'
)


def find(device_kind: str) -> Peak | None:
  """The first table entry with a key in `device_kind` as a whole word, or None."""
  for peak in GPU_PEAKS + TPU_PEAKS:
    for key in peak.keys:
      if re.search(rf'(?<![a-z0-9]){re.escape(key.lower())}(?![a-z0-9])', device_kind.lower()):
        return peak
  return None


def peak_flops(device_kind: str, platform: str, precision: str) -> tuple[float | None, str]:
  """(peak FLOP/s of one device under `precision`, how it was obtained) from the table; (None,
  why) where the table has no figure (always on CPU: measure one instead)."""
  if platform == 'cpu':
    return None, 'cpu: no table; measure a matmul'
  peak = find(device_kind)
  if peak is None:
    return None, f'{device_kind!r} is not in benchmarks/device_peaks.py'
  tpu = peak in TPU_PEAKS
  if precision == 'bfloat16':
    value, what = peak.bf16, 'bf16'
  elif precision == 'float32':
    if tpu:
      value, what = peak.bf16 / 3, 'bf16 / 3 (3-pass)'
    elif peak.tf32 is not None:
      value, what = peak.tf32, 'TF32'
    else:
      value, what = peak.fp32, 'fp32 (no TF32)'
  elif precision == 'float32_full':
    value, what = (peak.bf16 / 6, 'bf16 / 6 (6-pass)') if tpu else (peak.fp32, 'fp32')
  else:
    raise ValueError(f'unknown precision {precision!r}')
  if value is None:
    return None, f'{peak.name}: no {what} figure ({peak.source})'
  return value * TERA, f'{peak.name} {what} {value:g} TFLOP/s dense ({peak.source})'
