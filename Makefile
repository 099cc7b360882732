# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Offline datasets beside the project (CI and developer machines); empty elsewhere.
SHARED_DATA := $(abspath ../shared/datasets)
export KERAS_COMPRESS_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist.npz),$(SHARED_DATA),)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install dev demo test test-tf test-jax bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[all,dev]"
	# tf_keras writes Keras 2 .h5 files in a test; --no-deps keeps the CUDA tensorflow package out.
	$(PY) -m pip install -q --no-deps "tf_keras==2.21.*"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: install
	$(VENV)/bin/keras-compress demo --out runs/demo

test: dev test-tf test-jax

# Two workers (this machine's two cores); a test file stays on one worker so its module fixtures are built once.
XDIST ?= -n 2 --dist loadfile

test-tf: dev
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -p no:cacheprovider $(XDIST) --durations=15 tests

test-jax: dev
	KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider $(XDIST) --durations=10 -m "not tensorflow" tests/unit

bench: install
	KERAS_BACKEND=tensorflow $(PY) bench/pruning.py --baseline-epochs 8 --out bench/results
	KERAS_BACKEND=tensorflow $(PY) bench/clustering.py --out bench/results

bench-quick: install
	$(PY) bench/pruning.py --quick --out bench/results

# keras-compress vs Keras 3 quantization vs tfmot. The first run creates bench/.venv-tfmot
# (tensorflow-cpu, tf-keras, tensorflow-model-optimization, ai-edge-litert): a few minutes more.
.PHONY: bench-compare bench-compare-quick
bench-compare: install
	$(PY) bench/compare.py --models lenet5,lenet_300_100,bn_cnn,mobilenet_v2_tiny --out bench/results

bench-compare-quick: install
	$(PY) bench/compare.py --quick --out bench/results

clean:
	rm -rf runs bench/results .pytest_cache
