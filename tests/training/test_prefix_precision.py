"""`--prefix-precision auto` takes bf16 only where the CPU has AMX and bf16 measurably wins; the choice, its
reason, the CPU and the timings go into the training record."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.package import Split
from spamguard.training.pipeline import Job, prepare_data
from spamguard.training.prefix_precision import (
    CPU_FLAGS,
    MIN_SPEEDUP,
    CpuInfo,
    ProbeTimings,
    choose_precision,
    decide,
    parse_cpuinfo,
    probe_matmul,
    read_cpu_info,
)
from spamguard.training.recipe import TrainSettings, parse_trainable

AVX2 = frozenset({"avx2"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})  # the Xeon of issue 15: oneDNN says bf16 is native
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8 arch_lbr

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


def timings(speedup: float, seconds: float = 0.2) -> ProbeTimings:
    """Probe results where bf16 ran `speedup` times as fast as fp32 (below 1: slower)."""
    return ProbeTimings(fp32_s=0.01, bf16_s=0.01 / speedup, seconds=seconds, calls=5, shape=(256, 768, 2304))


@pytest.mark.parametrize(
    ("requested", "flags", "speedup", "expected"),
    [
        ("auto", AMX, 2.5, ("bf16", "AMX; bf16 matmul 2.50x faster in a 0.20 s check")),
        ("auto", AMX, 1.05, ("fp32", "AMX, but bf16 matmul 1.05x faster in a 0.20 s check, below the 1.1x bf16 needs")),
        ("auto", AMX, 0.5, ("fp32", "AMX, but bf16 matmul 2.00x slower in a 0.20 s check, below the 1.1x bf16 needs")),
        ("auto", AVX512_BF16, 1 / 1.78, ("fp32", "no AMX; bf16 matmul 1.78x slower in a 0.20 s check")),
        ("auto", AVX512_BF16, 1.3, ("fp32", "no AMX; bf16 matmul 1.30x faster in a 0.20 s check")),
        ("auto", AVX2, 1 / 6.7, ("fp32", "no AMX; bf16 matmul 6.70x slower in a 0.20 s check")),
        (
            "auto",
            AVX512_BF16 | {"amx_tile", "amx_int8"},
            3.0,
            ("fp32", "no AMX; bf16 matmul 3.00x faster in a 0.20 s check"),
        ),
        ("fp32", AMX, 2.5, ("fp32", "as asked")),
        ("bf16", AVX2, 1 / 6.7, ("bf16", "as asked")),
        ("bf16", frozenset(), None, ("bf16", "as asked")),
    ],
)
def test_decision_from_flags_and_timings(
    requested: str, flags: frozenset[str], speedup: float | None, expected: tuple[str, str]
) -> None:
    assert decide(requested, flags, None if speedup is None else timings(speedup)) == expected


def test_speedup_exactly_at_the_bar_takes_bf16() -> None:
    assert decide("auto", AMX, timings(MIN_SPEEDUP))[0] == "bf16"


def test_bad_requests() -> None:
    with pytest.raises(ValueError, match=r"^prefix precision must be one of auto, fp32, bf16, not 'fp16'$"):
        decide("fp16", AMX, timings(2.0))
    with pytest.raises(ValueError, match=r"^prefix precision must be one of auto, fp32, bf16, not 'fp16'$"):
        choose_precision("fp16", 32)
    with pytest.raises(ValueError, match=r"^prefix precision auto needs the probe's timings$"):
        decide("auto", AMX, None)


def test_cpuinfo_keeps_the_first_processor_and_the_flags_that_matter() -> None:
    cpu = parse_cpuinfo(CPUINFO)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.flags == frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
    assert cpu.to_dict() == {
        "model": "Intel(R) Xeon(R) Platinum 8480+",
        "flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"],  # in CPU_FLAGS' order
    }


def test_cpu_named_with_its_flags() -> None:
    assert CpuInfo("AMD EPYC", AVX2).describe() == "AMD EPYC (avx2)"
    assert parse_cpuinfo(CPUINFO).describe() == (
        "Intel(R) Xeon(R) Platinum 8480+ (avx2, avx512f, avx512_bf16, amx_tile, amx_bf16, amx_int8)"
    )


def test_no_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    cpu = read_cpu_info(tmp_path / "missing")
    assert cpu.flags == frozenset() and cpu.model  # the model falls back to what platform knows
    assert cpu.describe().endswith("(none of avx2, avx512f, avx512_bf16, amx_tile, amx_bf16, amx_int8, amx_fp16)")


def test_this_machines_cpu_is_read() -> None:
    cpu = read_cpu_info()
    assert cpu.flags <= frozenset(CPU_FLAGS) and cpu.model


def test_probe_gives_sane_timings_within_its_budget() -> None:
    t0 = time.perf_counter()
    probe = probe_matmul(64, tokens=32, budget_s=0.05)
    wall = time.perf_counter() - t0
    assert probe.shape == (32, 64, 192) and probe.calls >= 1
    for value in (probe.fp32_s, probe.bf16_s):
        assert 0 < value <= probe.seconds and math.isfinite(value)
    assert 0.05 <= probe.seconds <= wall < 5  # runs its budget, then stops (a generous ceiling)
    record = probe.to_dict()
    assert record["shape"] == [32, 64, 192] and record["speedup"] == pytest.approx(probe.speedup, abs=1e-3)


def test_probe_without_budget_times_one_call_each() -> None:
    assert probe_matmul(16, tokens=8, budget_s=0.0).calls == 1


def test_probe_at_gpt2_width_is_bounded() -> None:
    probe = probe_matmul(768)  # the GPT-2-124M shape `train` probes: ~0.3 s on a 2-core AVX2 VM
    assert probe.shape == (256, 768, 2304) and probe.seconds < 5


def test_explicit_choice_runs_no_probe() -> None:
    choice = choose_precision("fp32", 768, cpu=CpuInfo("test CPU", AMX))
    assert (choice.precision, choice.probe) == ("fp32", None)
    assert choice.line() == "prefix precision: fp32 (as asked)"
    assert choice.to_dict() == {
        "requested": "fp32",
        "chosen": "fp32",
        "reason": "as asked",
        "cpu": {"model": "test CPU", "flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]},
        "probe": None,
    }


def test_auto_on_a_cpu_without_amx_is_fp32_with_the_timings() -> None:
    choice = choose_precision("auto", 32, cpu=CpuInfo("test CPU", AVX512_BF16))
    assert choice.precision == "fp32" and choice.probe is not None
    assert choice.reason == f"no AMX; {choice.probe.describe()}"
    assert choice.to_dict()["probe"]["calls"] == choice.probe.calls


CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=32)


@pytest.mark.parametrize("requested", ["auto", "bf16"])
def test_prefix_cache_record_holds_the_choice(requested: str) -> None:
    torch.manual_seed(0)
    model = GPT2Classifier(CONFIG)
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in (3, 7, 5)]
    split = Split(tokens, np.array([0, 1, 0]), np.array(["sms"] * 3))
    lines: list[str] = []
    job = Job(recipe=TrainSettings(prefix_precision=requested))
    train_data, _, info = prepare_data(model, parse_trainable("last-block", 2), split, split, job, lines.append)
    record = info["precision_choice"]
    assert record["requested"] == requested and record["chosen"] == info["precision"]
    assert record["cpu"] == read_cpu_info().to_dict()
    assert lines[0] == f"prefix precision: {record['chosen']} ({record['reason']})"
    if requested == "bf16":
        assert (record["chosen"], record["reason"], record["probe"]) == ("bf16", "as asked", None)
    else:
        assert set(record["probe"]) == {"fp32_s", "bf16_s", "seconds", "calls", "shape", "speedup"}
        assert record["probe"]["shape"] == [256, 16, 48]
    train_data.cache.close()
