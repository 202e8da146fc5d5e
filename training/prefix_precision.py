"""The precision of the frozen-prefix pass (`spamguard train --prefix-precision`): bf16 only where it is faster here.

A capability flag does not say that. oneDNN reports native bf16 on a Xeon with AVX-512-BF16 and no AMX, where the
prefix cache took 8.9 s under bf16 autocast against 5.0 s in fp32; on AVX2 bf16 is emulated (6.7x slower). It pays
off with AMX tiles. So `auto` takes bf16 only where the CPU lists AMX *and* a short timing of the prefix's own
matmul in both precisions says bf16 clearly wins: the flag says the tiles exist, not that this torch uses them
at this shape, and the timing alone cannot see the rest of the pass (casts, element-wise ops in fp32), which is
what lost on AVX-512-BF16. The explicit `fp32` and `bf16` are taken as asked."""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

PRECISIONS = ("auto", "fp32", "bf16")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")  # what bf16 hangs on
AMX = frozenset({"amx_tile", "amx_bf16"})
# bf16 moves the cached states a little (one test message of 262 changed in both measured runs): take it only
# for a clear gain, not for a tie that noise on a shared machine could tip either way.
MIN_SPEEDUP = 1.1
# Rows of the probe's matmul: a batch of the prefix pass is 32 messages padded to their longest (an SMS averages
# ~25 tokens); 256 rows keep the GPT-2-124M probe at ~10 ms (fp32) / ~60 ms (emulated bf16) on a 2-core AVX2 VM.
PROBE_TOKENS = 256
PROBE_BUDGET_S = 0.2
CPUINFO = Path("/proc/cpuinfo")


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context the prefix pass (and the probe) runs in: bf16 autocast, or plain fp32."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]  # those of CPU_FLAGS the CPU lists

    def listed(self) -> list[str]:
        return [f for f in CPU_FLAGS if f in self.flags]

    def describe(self) -> str:
        """The CPU as a benchmark table names it: `AMD EPYC (avx2)`."""
        return f"{self.model} ({', '.join(self.listed()) or 'none of ' + ', '.join(CPU_FLAGS)})"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "flags": self.listed()}


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model name and the flags that matter from /proc/cpuinfo's first processor (Linux lists AMX only where
    the kernel lets programs use the tiles)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = frozenset(fields.get("flags", "").split()) & frozenset(CPU_FLAGS)
    return CpuInfo(fields.get("model name") or platform.processor() or platform.machine(), flags)


def read_cpu_info(path: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU; where there is no /proc/cpuinfo (not Linux) no flags are known, so `auto` is fp32."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


@dataclass(frozen=True)
class ProbeTimings:
    fp32_s: float  # fastest call of the matmul in fp32
    bf16_s: float  # fastest call under bf16 autocast
    seconds: float  # the whole probe, warm-up included
    calls: int  # timed calls per precision
    shape: tuple[int, int, int]  # (tokens, n_embd, 3 * n_embd)

    @property
    def speedup(self) -> float:
        """How many times faster bf16 ran than fp32 (below 1: slower)."""
        return self.fp32_s / self.bf16_s

    def describe(self) -> str:
        ratio = self.speedup
        pace = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        return f"bf16 matmul {pace} in a {self.seconds:.2f} s check"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fp32_s": round(self.fp32_s, 6),
            "bf16_s": round(self.bf16_s, 6),
            "seconds": round(self.seconds, 6),
            "calls": self.calls,
            "shape": list(self.shape),
            "speedup": round(self.speedup, 3),
        }


def probe_matmul(n_embd: int, tokens: int = PROBE_TOKENS, budget_s: float = PROBE_BUDGET_S) -> ProbeTimings:
    """Time the prefix's attention projection, `tokens` x n_embd -> 3 n_embd with fp32 weights, plain and under
    the prefix pass's own bf16 autocast (which casts the weights on every call, as the pass does).

    One warm-up call each (oneDNN builds its kernels on the first), then timed calls alternating between the two,
    so a neighbour's burst of load hits both, until `budget_s` has passed; the fastest call of each counts. It
    stops after the first pair past the budget, so it lasts the budget plus about two calls of each (the warm-up
    and the last pair)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, n_embd, generator=generator)
    weight = torch.randn(3 * n_embd, n_embd, generator=generator) / n_embd**0.5
    best = {"fp32": float("inf"), "bf16": float("inf")}
    calls = 0
    began = time.perf_counter()
    with torch.no_grad():
        for precision in best:
            with autocast(precision):
                F.linear(x, weight)  # (tokens, 3C)
        deadline = time.perf_counter() + budget_s
        while calls == 0 or time.perf_counter() < deadline:
            for precision in best:
                with autocast(precision):
                    t0 = time.perf_counter()
                    F.linear(x, weight)  # (tokens, 3C)
                    best[precision] = min(best[precision], time.perf_counter() - t0)
            calls += 1
    seconds = time.perf_counter() - began
    return ProbeTimings(best["fp32"], best["bf16"], seconds, calls, (tokens, n_embd, 3 * n_embd))


def check_requested(requested: str) -> None:
    if requested not in PRECISIONS:
        raise ValueError(f"prefix precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")


def decide(requested: str, flags: frozenset[str], probe: ProbeTimings | None) -> tuple[str, str]:
    """The precision and the reason for it, from the CPU's flags and the probe's timings (`auto` needs them)."""
    check_requested(requested)
    if requested != "auto":
        return requested, "as asked"
    if probe is None:
        raise ValueError("prefix precision auto needs the probe's timings")
    if not AMX.issubset(flags):
        return "fp32", f"no AMX; {probe.describe()}"
    if probe.speedup >= MIN_SPEEDUP:
        return "bf16", f"AMX; {probe.describe()}"
    return "fp32", f"AMX, but {probe.describe()}, below the {MIN_SPEEDUP}x bf16 needs"


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    precision: str  # fp32 | bf16: what the prefix pass runs in
    reason: str
    cpu: CpuInfo
    probe: ProbeTimings | None  # measured for `auto` only

    def line(self) -> str:
        return f"prefix precision: {self.precision} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        """The training record's account of the choice, so a slow or a bf16 run can be explained later."""
        return {
            "requested": self.requested,
            "chosen": self.precision,
            "reason": self.reason,
            "cpu": self.cpu.to_dict(),
            "probe": self.probe.to_dict() if self.probe is not None else None,
        }


def choose_precision(requested: str, n_embd: int, cpu: CpuInfo | None = None) -> PrecisionChoice:
    """Resolve `requested` on this machine, probing at the model's width (call it after setting torch's threads:
    the probe runs on as many as the pass will)."""
    check_requested(requested)
    cpu = cpu if cpu is not None else read_cpu_info()
    probe = probe_matmul(n_embd) if requested == "auto" else None
    precision, reason = decide(requested, cpu.flags, probe)
    return PrecisionChoice(requested, precision, reason, cpu, probe)
