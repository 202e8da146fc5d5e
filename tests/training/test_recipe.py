"""The recipe's parts: what `--trainable` unfreezes, the book's fixed padding, evaluation order, best-epoch
restore, the learning-rate schedule and gradient clipping, checkpoints."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from spamguard.training.errors import TrainingError
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.recipe import (
    TokenData,
    TrainSettings,
    evaluate,
    freeze_for,
    logits_of,
    lr_factor,
    parse_trainable,
    save_checkpoint,
    train,
)

CONFIG = GPTConfig(n_layer=3, n_head=2, n_embd=16, n_positions=64)


@pytest.fixture
def model() -> GPT2Classifier:
    torch.manual_seed(0)
    return GPT2Classifier(CONFIG)


def trainable_names(model: GPT2Classifier, spec: str) -> set[str]:
    """Trainable modules: `h.N` for a block, else the top-level name."""
    freeze_for(model, parse_trainable(spec, CONFIG.n_layer))
    groups = set()
    for name, param in model.named_parameters():
        if param.requires_grad:
            parts = name.split(".")
            groups.add(".".join(parts[:2]) if parts[0] == "h" else parts[0])
    return groups


def test_trainable_specs(model: GPT2Classifier) -> None:
    assert trainable_names(model, "last-layer") == {"head"}
    assert trainable_names(model, "last-block") == {"head", "ln_f", "h.2"}
    assert trainable_names(model, "2") == {"head", "ln_f", "h.1", "h.2"}
    assert trainable_names(model, "all") == {"head", "ln_f", "h.0", "h.1", "h.2", "wte", "wpe"}
    assert parse_trainable("last-block", 3).start == 2 and parse_trainable("all", 3).cacheable is False


@pytest.mark.parametrize("spec", ["0", "4", "some", "-1"])
def test_bad_trainable_spec(spec: str) -> None:
    with pytest.raises(TrainingError) as info:
        parse_trainable(spec, 3)
    assert str(info.value) == (
        f"--trainable must be last-block, last-layer, all or a number of blocks from 1 to 3, not {spec!r}"
    )


def test_book_padding_to_one_length_gives_the_same_logits(model: GPT2Classifier) -> None:
    tokens = [[5, 6, 7], list(range(100, 120)), [9]]
    labels = [0, 1, 0]
    fixed, dynamic = TokenData(tokens, labels, pad_to=32), TokenData(tokens, labels)
    rows = np.arange(3)
    assert fixed.batch(rows).ids.shape == (3, 32) and dynamic.batch(rows).ids.shape == (3, 20)
    with torch.no_grad():
        assert torch.allclose(logits_of(model, fixed.batch(rows)), logits_of(model, dynamic.batch(rows)), atol=1e-6)


def test_evaluate_returns_scores_in_data_order(model: GPT2Classifier) -> None:
    rng = np.random.default_rng(1)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in (30, 2, 17, 5, 9)]
    result = evaluate(model.eval(), TokenData(tokens, [0, 1, 0, 1, 1]), batch_size=2)
    with torch.no_grad():
        alone = [torch.softmax(model(torch.tensor([t]), torch.tensor([len(t)])), -1)[0, 1].item() for t in tokens]
    assert np.allclose(result.scores, alone, atol=1e-6)
    assert result.labels.tolist() == [0, 1, 0, 1, 1]


def test_best_epoch_is_restored(model: GPT2Classifier) -> None:
    rng = np.random.default_rng(2)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 20, 24)]
    data = TokenData(tokens, rng.integers(0, 2, 24))
    settings = TrainSettings(trainable="last-block", epochs=4, batch_size=4, lr=3e-3, seed=0)
    logged: list[str] = []
    result = train(model, data, data, settings, parse_trainable("last-block", 3), log=logged.append)
    best = max(result.history, key=lambda s: (s.val_accuracy, -s.val_loss))
    assert result.best_epoch == best.epoch and len(logged) == 4
    assert evaluate(model, data).loss == pytest.approx(best.val_loss, abs=1e-6)
    assert set(result.state) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert result.trainable_parameters == sum(v.numel() for v in result.state.values())


def test_on_epoch_sees_each_epochs_own_weights(model: GPT2Classifier) -> None:
    """The hook must see every epoch's weights (what a benchmark scores to compare epoch choices), not the kept
    ones: its validation loss of epoch N is the history's, and the training is the same with or without it."""
    rng = np.random.default_rng(3)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 20, 24)]
    data = TokenData(tokens, rng.integers(0, 2, 24))
    settings = TrainSettings(trainable="last-block", epochs=3, batch_size=4, lr=3e-3, seed=0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[int, float]] = []
    hooked = train(
        model, data, data, settings, parse_trainable("last-block", 3), log=lambda _line: None,
        on_epoch=lambda epoch, m: seen.append((epoch, evaluate(m, data).loss)),
    )  # fmt: skip
    assert [epoch for epoch, _loss in seen] == [1, 2, 3]
    assert [loss for _epoch, loss in seen] == pytest.approx([s.val_loss for s in hooked.history], abs=1e-6)
    model.load_state_dict(start)
    plain = train(model, data, data, settings, parse_trainable("last-block", 3), log=lambda _line: None)
    assert [s.val_loss for s in plain.history] == [s.val_loss for s in hooked.history]


def test_checkpoint_is_safetensors_with_config(model: GPT2Classifier, tmp_path: Path) -> None:
    path = save_checkpoint(model, tmp_path / "c.safetensors", only=["head.weight", "head.bias"], metadata={"seed": 1})
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"head.weight", "head.bias"}
        meta = f.metadata()
        assert torch.equal(f.get_tensor("head.weight"), model.head.weight.detach())
    assert json.loads(meta["config"]) == CONFIG.to_dict() and json.loads(meta["seed"]) == 1


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    factor = lr_factor("cosine", 200)  # warm-up: 5% of 200 steps
    rates = [factor(step) for step in range(200)]
    assert rates[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert rates[10] == pytest.approx(1.0) and rates[-1] < 1e-3
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert {lr_factor("constant", 200)(step) for step in range(200)} == {1.0}
    with pytest.raises(TrainingError, match="unknown learning-rate schedule 'linear'"):
        lr_factor("linear", 200)


def _weights_moved(settings: TrainSettings) -> float:
    """The largest change of a trained weight after `train` with these settings, from one initialisation."""
    torch.manual_seed(0)
    model = GPT2Classifier(CONFIG)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = np.random.default_rng(3)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 20, 16)]
    data = TokenData(tokens, rng.integers(0, 2, 16))
    train(model, data, data, settings, parse_trainable("last-block", 3), log=lambda _line: None)
    return max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters())


def test_gradient_clipping_and_schedule_reach_the_optimizer() -> None:
    """Adam's step hardly depends on the gradient's scale, until the gradient falls below its epsilon: clipped
    to a norm of 1e-12, the weights move by weight decay alone, orders of magnitude less than unclipped."""
    base = TrainSettings(trainable="last-block", epochs=1, batch_size=4, lr=1e-2, weight_decay=0.0, seed=0)
    free = _weights_moved(base)
    assert free > 1e-3
    assert _weights_moved(replace(base, max_grad_norm=1e-12)) < free / 100
    # a one-epoch cosine run takes smaller steps than a constant one at the same peak rate
    assert _weights_moved(replace(base, lr_schedule="cosine")) < free
    with pytest.raises(TrainingError, match="--max-grad-norm must be above 0"):
        _weights_moved(replace(base, max_grad_norm=0.0))
