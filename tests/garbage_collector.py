"""The pytest workers' and the zygote's garbage-collector settings (tests/conftest.py,
tests/zygote.py)."""

import gc


def quiet() -> None:
  """perf found about 7% of the suite's CPU in Python's cyclic garbage collector. The imported
  TensorFlow, JAX and Flax are about half a million objects that live as long as the process;
  frozen (`gc.freeze`, also meant for a parent that forks), the collector no longer walks them.
  Tracing allocates many short-lived objects: rarer young and full collections. test_models' time
  in the collector: 6.5 s, now 1.4 s. Call it once the libraries are imported."""
  gc.collect()
  gc.freeze()
  gc.set_threshold(2000, 10, 50)  # Python's defaults: 700, 10, 10
