"""Tiny GPT-2 checkpoints in the exact Hugging Face layout, and a reference forward pass that reads them.

Written from the hub's tensor names and Conv1D shapes, independently of `spamguard.training`, so that loading
one through the product's loader and comparing outputs proves the key mapping and the transposes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import BPE_DIR

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 256}


def hf_tensors(n_layer: int, n_head: int, n_embd: int, n_positions: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as in `openai-community/gpt2`'s model.safetensors."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    C = n_embd
    t = {"wte.weight": rnd(50257, C), "wpe.weight": rnd(n_positions, C)}
    for i in range(n_layer):
        p = f"h.{i}."
        t |= {
            p + "ln_1.weight": 1 + rnd(C, std=0.1),
            p + "ln_1.bias": rnd(C),
            p + "attn.c_attn.weight": rnd(C, 3 * C),
            p + "attn.c_attn.bias": rnd(3 * C),
            p + "attn.c_proj.weight": rnd(C, C),
            p + "attn.c_proj.bias": rnd(C),
            p + "ln_2.weight": 1 + rnd(C, std=0.1),
            p + "ln_2.bias": rnd(C),
            p + "mlp.c_fc.weight": rnd(C, 4 * C),
            p + "mlp.c_fc.bias": rnd(4 * C),
            p + "mlp.c_proj.weight": rnd(4 * C, C),
            p + "mlp.c_proj.bias": rnd(C),
            # the causal-mask buffer the hub files carry
            p + "attn.bias": torch.tril(torch.ones(n_positions, n_positions)).view(1, 1, n_positions, n_positions),
        }
    t |= {"ln_f.weight": 1 + rnd(C, std=0.1), "ln_f.bias": rnd(C)}
    return t


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor] | None = None, **config: int) -> Path:
    """A folder as `huggingface_hub.snapshot_download` leaves it: config.json, model.safetensors, vocab.json,
    merges.txt (the real GPT-2 BPE files)."""
    cfg = {**TINY, **config}
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors(**cfg) if tensors is None else tensors
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    hub_config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": 50257,
        "n_ctx": cfg["n_positions"],
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        **cfg,
    }
    (folder / "config.json").write_text(json.dumps(hub_config))
    shutil.copyfile(BPE_DIR / "encoder.json", folder / "vocab.json")
    shutil.copyfile(BPE_DIR / "vocab.bpe", folder / "merges.txt")
    return folder


def reference_hidden(t: dict[str, torch.Tensor], n_head: int, ids: torch.Tensor) -> torch.Tensor:
    """GPT-2's final hidden states (after ln_f) computed straight from the hub tensors, Conv1D as x @ W + b."""
    C = t["wte.weight"].shape[1]
    n_layer = len({k.split(".")[1] for k in t if k.startswith("h.")})
    T = ids.shape[1]
    x = t["wte.weight"][ids] + t["wpe.weight"][:T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layer):
        p = f"h.{i}."
        h = F.layer_norm(x, (C,), t[p + "ln_1.weight"], t[p + "ln_1.bias"], 1e-5)
        qkv = h @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]
        q, k, v = (z.view(*z.shape[:2], n_head, C // n_head).transpose(1, 2) for z in qkv.split(C, dim=-1))
        att = (q @ k.transpose(-2, -1)) / (C // n_head) ** 0.5
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(x.shape)
        x = x + y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), t[p + "ln_2.weight"], t[p + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ t[p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
    return F.layer_norm(x, (C,), t["ln_f.weight"], t["ln_f.bias"], 1e-5)
