# spamguard: `make install` builds .venv with everything (runtime, training, plugins, dev tools).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test bench bench-accuracy bench-training bench-own-mail bench-cross-kind bench-robustness \
	bench-cascade bench-token-budget text-unchanged lookalikes known-words lint format

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	# torch pinned: the CPU wheel on this disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# setuptools may warn "Editable installation ... folders in your working directory with the same name as your
	# package": harmless here, the folder is the package itself (docs/design-decisions.md, "Layout").
	$(PY) -m pip install -q -e '.[train,milter,http,dev]'
	@echo "spamguard is in $(VENV)/bin: '. $(VENV)/bin/activate' puts it on this shell's PATH"

# The main job as a user online runs it: downloads GPT-2 (124M), the SMS Spam Collection and the SpamAssassin
# public corpus (both kinds of message), fine-tunes, exports the bundle and installs it as the default model.
train: install
	$(VENV)/bin/spamguard train

test:
	$(PY) -m pytest -q

# The benchmarks read the public data sets from $SPAMGUARD_DATA (spamguard.paths.datasets_dir(): the SMS Spam
# Collection, the SpamAssassin sample, GPT-2's BPE files). They are meant for this project's machines, which keep a
# copy in ../shared/data, so these targets default to it; elsewhere run e.g. `make bench SPAMGUARD_DATA=~/data`.
# `make install`, `make train` and `make test` never read it: tests use tests/fixtures/, training downloads.
BENCH_TARGETS := bench bench-accuracy bench-training bench-own-mail bench-cross-kind bench-cascade bench-token-budget
$(BENCH_TARGETS): export SPAMGUARD_DATA ?= $(abspath ../shared/data)

bench:
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=median,iqr,ops,rounds
	$(PY) benchmarks/runtime_startup.py

# spamguard against TF-IDF/logreg, naive Bayes and bogofilter on the same seeded splits (P1, P2, P3).
bench-accuracy:
	$(PY) benchmarks/run_accuracy.py

# 5 epochs of a GPT-2-124M-shaped model three ways: the book's fixed padding, dynamic padding, + prefix cache.
bench-training:
	$(PY) benchmarks/bench_training.py

# spamguard train --ham/--spam on the SpamAssassin sample through the CLI (docs/own-mail.md): a small GPT-2
# (4 layers x 256) from random weights, every layer trained at lr 3e-4 (the accuracy benchmark's settings),
# threshold for FPR <= 1% on validation; prints the held-out test figures and the time taken. Writes only under
# OWN_MAIL_WORK.
OWN_MAIL_WORK ?= /tmp/spamguard-own-mail
bench-own-mail:
	mkdir -p $(OWN_MAIL_WORK)/small-4x256
	echo '{"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256}' \
		> $(OWN_MAIL_WORK)/small-4x256/config.json
	start=$$(date +%s); SPAMGUARD_HOME=$(OWN_MAIL_WORK)/home $(VENV)/bin/spamguard train \
		--base $(OWN_MAIL_WORK)/small-4x256 --weights random --trainable all \
		--ham "$$SPAMGUARD_DATA/spamassassin_2003_part1/ham" --spam "$$SPAMGUARD_DATA/spamassassin_2003_part1/spam" \
		--tokenizer "$$SPAMGUARD_DATA/gpt2_bpe" \
		--lr 3e-4 --max-fpr 0.01 --threads 1 --out $(OWN_MAIL_WORK)/bundle-$$(date +%Y%m%d-%H%M%S) --no-install \
		&& echo "$$(( $$(date +%s) - start )) s wall"

# Models trained on SMS only, mail only and both (4 layers x 256, random weights, every layer trained, lr 3e-4,
# 3 seeds), each scored on the SMS and the mail test part of one split, and the training time of both kinds vs
# SMS only (docs/training.md, "Mail and SMS together"). Offline: the shared data. Writes under CROSS_KIND_OUT.
CROSS_KIND_OUT ?= /tmp/spamguard-cross-kind
CROSS_KIND_ARGS ?= --threads 1
bench-cross-kind:
	SPAMGUARD_HOME=$(CROSS_KIND_OUT)/home \
		$(PY) benchmarks/cross_kind.py --out $(CROSS_KIND_OUT) $(CROSS_KIND_ARGS)

# The cascade and the verdict cache (docs/cascade.md): the offline teacher (4 x 256, both kinds), students distilled
# from it (2x128, 4x128), the cascade's agreement, share and recall/FPR against the teacher per kind; the speed of a
# GPT-2-124M-shaped bundle alone and with the chosen student (classify_batch, and the milter through a private
# Postfix: needs root, postfix, aiosmtpd); the cache on the corpus's own repeats and on a campaign. Writes
# $(CASCADE_OUT)/cascade.md, .json, .png. About 35 minutes with CASCADE_ARGS="--torch-threads 2" on 2 idle cores
# (2026-11-30); "--teacher BUNDLE" reuses a teacher trained on the default data (seed 123), "--skip-milter" leaves
# Postfix out.
CASCADE_OUT ?= /tmp/spamguard-cascade
CASCADE_ARGS ?= --torch-threads 1
bench-cascade:
	SPAMGUARD_HOME=$(CASCADE_OUT)/home $(PY) benchmarks/bench_cascade.py --out $(CASCADE_OUT) $(CASCADE_ARGS)

# Mail recall and FPR at 64, 128 and 256 tokens, the offline configuration trained at each budget by the real
# pipeline (TOKEN_BUDGET_ARGS="--kinds mail" trains on mail alone, in a quarter of the time; "--method truncate
# --model BUNDLE" scores one model cut to each budget), and the 124M-shaped model's cost per mail at each.
TOKEN_BUDGET_OUT ?= /tmp/spamguard-token-budget
TOKEN_BUDGET_ARGS ?= --threads 1
bench-token-budget:
	SPAMGUARD_HOME=$(TOKEN_BUDGET_OUT)/home $(PY) benchmarks/token_budget.py --out $(TOKEN_BUDGET_OUT) $(TOKEN_BUDGET_ARGS)

# Spam in disguise (homoglyphs, zero-width, soft hyphens, full width, comment-split words, hidden padding,
# leetspeak, all): recall of spamguard trained with and without normalization and of the baselines (docs/robustness.md).
ROBUSTNESS_OUT ?= docs/robustness
bench-robustness:
	$(PY) benchmarks/bench_robustness.py --out $(ROBUSTNESS_OUT)

# How many messages of the full data sets normalization changes, and how.
text-unchanged:
	$(PY) benchmarks/text_unchanged.py

# Regenerate spamguard/lookalikes.py from the confusable_homoglyphs package's Unicode data (after upgrading it).
lookalikes:
	$(PY) tools/make_lookalikes.py
	$(VENV)/bin/ruff format spamguard/lookalikes.py

# Regenerate spamguard/known_words.py from GPT-2's encoder.json (the copy the tests hold).
known-words:
	$(PY) tools/make_known_words.py
	$(VENV)/bin/ruff format spamguard/known_words.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
