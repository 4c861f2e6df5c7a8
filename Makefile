# The two commands that matter on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench bench-vs-pytorch clean

# uv installs the pinned files: pip took 1 min 50 s here for requirements-dev.txt, uv 24 s with
# the byte-code compiled (5 s without; benchmarks/README.md). pip stays in the venv.
UV_PIN := uv==0.13.10
UV_INSTALL := $(VENV)/bin/uv pip install --quiet --python $(PY)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $(UV_PIN)
	$(UV_INSTALL) --compile-bytecode -r requirements-dev.txt
	$(UV_INSTALL) --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	tests/run_isolated.sh $(PY) -m pytest -n 2 -q tests

demo: $(STAMP)
	$(PY) demo.py --workdir demo_out

bench: $(STAMP)
	$(PY) benchmarks/model_speed.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/frame_fidelity.py
	$(PY) benchmarks/class_mixing.py

# PyTorch side by side (installs requirements-bench.txt into .venv; see its note on the CPU build).
bench-vs-pytorch: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) benchmarks/vs_pytorch.py --memory
	$(PY) benchmarks/conv_vs_pytorch.py

clean:
	rm -rf $(VENV) demo_out

# Accelerator installs (docs/launch.md): requirements.txt plus JAX's CUDA 12 plugin or TPU runtime,
# and the package, into $(VENV) (override with VENV=...); no test dependencies. `make demo` and
# `make test` stay the CPU install.
.PHONY: venv-gpu venv-tpu

# $(VENV)/.installed-gpu from requirements-gpu.txt, $(VENV)/.installed-tpu from requirements-tpu.txt.
$(VENV)/.installed-%: requirements.txt requirements-%.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $(UV_PIN)
	$(UV_INSTALL) --compile-bytecode -r requirements-$*.txt
	$(UV_INSTALL) --no-deps -e .
	touch $@

venv-gpu: $(VENV)/.installed-gpu

venv-tpu: $(VENV)/.installed-tpu
