"""GPT-2 with a two-class head, in the module layout of the upstream checkpoints.

Parameter names follow Hugging Face's `GPT2Model` (`wte`, `wpe`, `h.N.attn.c_attn`, `ln_f`, ...) so loading the
published weights is one loop with a shape check per tensor (see `weights.py`). The vocabulary head is replaced by
`head = Linear(n_embd, 2)`, read at each message's last real token: inputs are right-padded and attention is
causal, so padding never changes a message's logits."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # residual stream width
    n_positions: int = 1024  # longest sequence the position table covers
    vocab_size: int = 50257  # GPT-2 BPE (50,000 merges + 256 bytes + <|endoftext|>)
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0  # off for fine-tuning, as in the book's classification chapter
    num_classes: int = 2  # ham, spam

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf(cls, config: dict, **overrides: object) -> GPTConfig:
        """From a hub `config.json` (its keys are the ones this dataclass uses; others are ignored)."""
        keys = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "layer_norm_epsilon")
        return cls(**{k: config[k] for k in keys if k in config}, **overrides)


# The GPT-2 family on the Hugging Face hub, by the short names users type.
HUB_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
CONFIGS = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # hub: Conv1D, weight stored transposed
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), is_causal=True, dropout_p=p)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def forward_last(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Attention output at one query position per row (`last`, the last real token): the query, the output
        projection and everything after it shrink to that position, which is all a classifier reads from the
        final block. Keys and values are projected for real positions only, packed: right padding sits after
        `last`, where the causal mask hides it anyway, and short messages in a long batch pay for no padding
        (on the SMS data half the positions of a training batch are padding)."""
        B, T, C = x.shape
        rows = torch.arange(B, device=x.device)
        w, b = self.c_attn.weight, self.c_attn.bias  # (3C, C), (3C,): rows are [q | k | v]
        q_last = F.linear(x[rows, last], w[:C], b[:C]).unsqueeze(1)  # (B, 1, C)
        real = torch.arange(T, device=x.device)[None, :] <= last[:, None]  # (B, T)
        kv_real = F.linear(x[real], w[C:], b[C:])  # (real positions, 2C)
        kv = kv_real.new_zeros(B, T, 2 * C)
        kv[real] = kv_real  # padded positions stay zero: the mask below hides them
        k, v = kv.split(C, dim=2)  # 2 x (B, T, C)
        # Additive mask: keys after the query position get -inf (causal); right padding sits after it anyway.
        key_pos = torch.arange(T, device=x.device)
        mask = torch.where(key_pos[None, :] > last[:, None], float("-inf"), 0.0).to(q_last.dtype)  # (B, T)
        hs = C // self.n_head
        att = (self._heads(q_last) @ self._heads(k).transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, 1, T)
        att = torch.softmax(att + mask[:, None, None, :], dim=-1)
        y = att @ self._heads(v)  # (B, nh, 1, hs)
        return self.c_proj(y.transpose(1, 2).reshape(B, 1, C))  # (B, 1, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's tanh GELU


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))  # (B, T, C)

    def forward_last(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device)
        x_last = x[rows, last].unsqueeze(1) + self.attn.forward_last(self.ln_1(x), last)  # (B, 1, C)
        return x_last + self.mlp(self.ln_2(x_last))  # (B, 1, C)


class GPT2Classifier(nn.Module):
    """GPT-2 whose output is two logits (ham, spam) read at each row's last real token.

    The stack splits at any block boundary into a `prefix` (embeddings + the first blocks) and a `tail` (the rest,
    the final LayerNorm and the head). Training freezes the prefix, so its output can be computed once per
    message and cached; `forward` is exactly `tail(prefix(...))`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.head = nn.Linear(config.n_embd, config.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's own initialisation, used when training from random weights (`--weights random`)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def prefix(self, input_ids: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Hidden states after the embeddings and the first `n_blocks` blocks."""
        T = input_ids.shape[1]
        if self.config.n_positions < T:
            raise ValueError(f"sequence of {T} tokens is longer than the model's {self.config.n_positions}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)  # (B, T, C)
        for block in self.h[:n_blocks]:
            x = block(x)
        return x  # (B, T, C)

    def tail(self, x: torch.Tensor, lengths: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from hidden states after block `start`; the final block runs at the last real position only."""
        last = lengths - 1  # (B,)
        blocks = self.h[start:]
        if len(blocks) == 0:
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, last].unsqueeze(1)  # (B, 1, C)
        else:
            for block in blocks[:-1]:
                x = block(x)
            x = blocks[-1].forward_last(x, last)  # (B, 1, C)
        return self.head(self.ln_f(x[:, 0]))  # (B, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.tail(self.prefix(input_ids, 0), lengths, 0)  # (B, num_classes)
