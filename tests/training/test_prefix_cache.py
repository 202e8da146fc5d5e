"""The prefix cache changes how fast training runs, never what it computes: same loss, same gradients, same run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.prefix_cache import build_cache
from spamguard.training.recipe import (
    CachedData,
    TokenData,
    TrainSettings,
    calc_loss_batch,
    freeze_for,
    parse_trainable,
    train,
)

CONFIG = GPTConfig(n_layer=3, n_head=2, n_embd=16, n_positions=64)


def quiet(items: object, **_: object) -> object:
    return items


@pytest.fixture
def model() -> GPT2Classifier:
    torch.manual_seed(0)
    return GPT2Classifier(CONFIG)


@pytest.fixture
def examples() -> tuple[list[list[int]], np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 40, 37)]
    return tokens, rng.integers(0, 2, 37)


def grads(model: GPT2Classifier) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("spec", ["last-layer", "last-block", "2", "3"])
def test_cached_and_uncached_give_the_same_loss_and_gradients(
    model: GPT2Classifier, examples: tuple[list[list[int]], np.ndarray], spec: str
) -> None:
    tokens, labels = examples
    trainable = parse_trainable(spec, CONFIG.n_layer)
    freeze_for(model, trainable)
    cache = build_cache(
        model, tokens, trainable.start, last_only=trainable.last_only, store_dtype=np.float32, progress=quiet
    )
    indices = np.array([3, 0, 17, 36, 8, 21, 5, 30])  # mixed lengths: every row but one carries padding
    results = []
    for data in (TokenData(tokens, labels), CachedData(cache, labels)):
        model.zero_grad(set_to_none=True)
        loss, _ = calc_loss_batch(model, data.batch(indices))
        loss.backward()
        results.append((loss.item(), grads(model)))
    (loss_plain, g_plain), (loss_cached, g_cached) = results
    assert loss_cached == pytest.approx(loss_plain, abs=1e-6)
    assert set(g_plain) == set(g_cached) and "head.weight" in g_plain
    assert ("ln_f.weight" in g_plain) == (spec != "last-layer")
    for name in g_plain:
        assert torch.allclose(g_cached[name], g_plain[name], atol=1e-6), name


def test_whole_training_run_is_the_same_with_and_without_cache(
    examples: tuple[list[list[int]], np.ndarray],
) -> None:
    tokens, labels = examples
    settings = TrainSettings(trainable="last-block", epochs=2, batch_size=4, lr=1e-3, seed=5)
    runs = []
    for cached in (False, True):
        torch.manual_seed(0)
        model = GPT2Classifier(CONFIG)
        trainable = parse_trainable(settings.trainable, CONFIG.n_layer)
        if cached:
            train_data = CachedData(build_cache(model, tokens, trainable.start, store_dtype=np.float32), labels)
            val_data = CachedData(build_cache(model, tokens[:9], trainable.start, store_dtype=np.float32), labels[:9])
        else:
            train_data, val_data = TokenData(tokens, labels), TokenData(tokens[:9], labels[:9])
        result = train(model, train_data, val_data, settings, trainable, log=lambda _: None, progress=quiet)
        runs.append((result, model.head.weight.detach().clone()))
    (plain, w_plain), (cached, w_cached) = runs
    for a, b in zip(plain.history, cached.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-5)
    assert torch.allclose(w_plain, w_cached, atol=1e-5)
    assert plain.history[0].train_loss != plain.history[1].train_loss  # the weights did move


def test_each_example_is_stored_at_its_own_length_in_fp16(
    model: GPT2Classifier, examples: tuple[list[list[int]], np.ndarray]
) -> None:
    tokens, _ = examples
    cache = build_cache(model, tokens, 2, progress=quiet)
    assert cache.data.dtype == np.float16 and not cache.on_disk
    assert cache.lengths.tolist() == [len(t) for t in tokens]
    with torch.no_grad():
        expected = model.prefix(torch.tensor([tokens[5]]), 2)[0].numpy()
    assert np.allclose(cache.data[cache.offsets[5] : cache.offsets[6]], expected, atol=2e-3)
    head_only = build_cache(model, tokens, CONFIG.n_layer, last_only=True, progress=quiet)
    assert head_only.lengths.tolist() == [1] * len(tokens)
    assert head_only.nbytes == len(tokens) * CONFIG.n_embd * 2


def test_large_cache_goes_to_a_memmap_and_is_deleted_on_close(
    model: GPT2Classifier, examples: tuple[list[list[int]], np.ndarray], tmp_path: Path
) -> None:
    tokens, _ = examples
    in_memory = build_cache(model, tokens, 1, progress=quiet)
    on_disk = build_cache(model, tokens, 1, memory_limit=0, work_dir=tmp_path, progress=quiet)
    assert on_disk.on_disk and isinstance(on_disk.data, np.memmap)
    files = list(tmp_path.glob("spamguard-prefix-cache-*/states.npy"))
    assert len(files) == 1 and files[0].stat().st_size >= on_disk.nbytes
    indices = np.array([2, 9, 30])
    assert torch.equal(on_disk.batch(indices)[0], in_memory.batch(indices)[0])
    on_disk.close()
    assert not any(tmp_path.iterdir())


def test_padding_rows_of_a_rebuilt_batch_are_zero(
    model: GPT2Classifier, examples: tuple[list[list[int]], np.ndarray]
) -> None:
    tokens, _ = examples
    cache = build_cache(model, tokens, 1, progress=quiet)
    hidden, lengths = cache.batch(np.array([0, 1, 2]))
    assert hidden.shape == (3, int(lengths.max()), CONFIG.n_embd) and hidden.dtype == torch.float32
    for row, n in enumerate(lengths.tolist()):
        assert torch.count_nonzero(hidden[row, n:]) == 0 and torch.count_nonzero(hidden[row, n - 1]) > 0


def test_bf16_prefix_stays_close_to_fp32(model: GPT2Classifier, examples: tuple[list[list[int]], np.ndarray]) -> None:
    tokens, _ = examples
    fp32 = build_cache(model, tokens[:8], 2, store_dtype=np.float32, progress=quiet)
    bf16 = build_cache(model, tokens[:8], 2, precision="bf16", store_dtype=np.float32, progress=quiet)
    scale = np.abs(fp32.data).max()
    assert np.abs(bf16.data - fp32.data).max() <= 0.05 * scale
    assert not np.array_equal(bf16.data, fp32.data)  # autocast really ran in bf16
