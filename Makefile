# spamguard: `make install` builds .venv with everything (runtime, training, plugins, dev tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_SMS := ../shared/data/sms_spam_collection/SMSSpamCollection

.PHONY: install train test bench bench-accuracy bench-training lint format

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	# torch pinned: the CPU wheel on this disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,milter,dev]'

# The main job as a user online runs it: downloads GPT-2 (124M) and the SMS Spam Collection, fine-tunes,
# exports the bundle and installs it as the default model.
train: install
	$(VENV)/bin/spamguard train

test:
	$(PY) -m pytest -q

bench:
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=median,iqr,ops,rounds
	$(PY) benchmarks/runtime_startup.py

# spamguard against TF-IDF/logreg, naive Bayes and bogofilter on the same seeded splits (P1, P2, P3).
bench-accuracy:
	$(PY) benchmarks/run_accuracy.py

# 5 epochs of a GPT-2-124M-shaped model three ways: the book's fixed padding, dynamic padding, + prefix cache.
bench-training:
	$(PY) benchmarks/bench_training.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
