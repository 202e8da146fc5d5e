"""Pretrained GPT-2 weights: from the Hugging Face hub or from a local folder in the hub's layout.

Both paths end in the same folder shape (`config.json`, `model.safetensors`, `vocab.json`, `merges.txt`) and the
same loader, so what the tests check on a tiny checkpoint is what runs on the real 124M-1.5B weights."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from spamguard.paths import cache_dir
from spamguard.training.errors import WeightsError
from spamguard.training.gpt2 import CONFIGS, HUB_REPOS, GPT2Classifier, GPTConfig

HUB_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]

# Hub tensors stored by Conv1D as (in_features, out_features); nn.Linear wants the transpose.
_CONV1D = re.compile(r"^h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
# Buffers and tied copies in the hub files that are not parameters of ours: the causal-mask buffers, and the
# vocabulary head (tied to wte), which the classifier replaces.
_IGNORED = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")


@dataclass(frozen=True)
class BaseModel:
    """A base checkpoint on disk: where it is and what it is called in bundle metadata."""

    name: str
    path: Path

    @property
    def encoder_json(self) -> Path:
        return self.path / "vocab.json"

    @property
    def vocab_bpe(self) -> Path:
        return self.path / "merges.txt"

    def config(self, **overrides: object) -> GPTConfig:
        return read_config(self.path, **overrides)


def read_config(path: Path, **overrides: object) -> GPTConfig:
    config_file = Path(path) / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"{path} is not a GPT-2 checkpoint folder: config.json is missing") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read {config_file}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("model_type", "gpt2") != "gpt2":
        raise WeightsError(f"{config_file} does not describe a GPT-2 model")
    return GPTConfig.from_hf(raw, **overrides)


def is_known_name(base: str) -> bool:
    return base in HUB_REPOS


def locate(base: str, weights: str) -> BaseModel | None:
    """The base on disk before any model is built: downloaded for pretrained weights, a folder as given, or
    None for random weights in a named configuration (nothing to read from disk then)."""
    if weights == "pretrained":
        return fetch(base)
    path = Path(base).expanduser()
    if path.is_dir():
        read_config(path)
        return BaseModel(name=path.name, path=path)
    if is_known_name(base):
        return None
    raise WeightsError(f"unknown base model {base!r}: use one of {', '.join(HUB_REPOS)} or a folder with config.json")


def fetch(base: str, *, need_weights: bool = True) -> BaseModel:
    """Find `base` on disk: a folder path as given, or a GPT-2 name downloaded through huggingface_hub into
    spamguard's cache (resumed if interrupted; served from the cache when offline)."""
    path = Path(base).expanduser()
    if path.is_dir():
        missing = [f for f in HUB_FILES if not (path / f).is_file() and (need_weights or f != "model.safetensors")]
        if missing:
            raise WeightsError(f"{path} lacks {', '.join(missing)} (expected the Hugging Face GPT-2 layout)")
        return BaseModel(name=path.name, path=path)
    if not is_known_name(base):
        raise WeightsError(
            f"unknown base model {base!r}: use one of {', '.join(HUB_REPOS)} or a folder in the Hugging Face layout"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    files = HUB_FILES if need_weights else [f for f in HUB_FILES if f != "model.safetensors"]
    try:
        folder = snapshot_download(HUB_REPOS[base], allow_patterns=files, cache_dir=cache_dir() / "huggingface")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise WeightsError(
            f"cannot download {HUB_REPOS[base]} and it is not cached ({type(exc).__name__}): go online once, "
            "or pass --base FOLDER (a local GPT-2 folder), or train from scratch with --weights random "
            "--tokenizer DIR"
        ) from exc
    return BaseModel(name=base, path=Path(folder))


def hub_key(key: str) -> str:
    """Our parameter name for a hub tensor name; some exports prefix every name with `transformer.`."""
    return key.removeprefix("transformer.")


def load_pretrained(model: GPT2Classifier, base: BaseModel) -> None:
    """Copy the hub tensors into `model`, transposing Conv1D weights and checking every name and shape; the new
    two-class head keeps its fresh initialisation."""
    file = base.path / "model.safetensors"
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    seen: set[str] = set()
    try:
        with safe_open(str(file), framework="pt") as f:
            for raw_key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                key = hub_key(raw_key)
                if _IGNORED.match(key):
                    continue
                if key not in ours:
                    raise WeightsError(f"{file}: unexpected tensor {raw_key!r} (not part of GPT-2)")
                tensor = f.get_tensor(raw_key)
                if _CONV1D.match(key):
                    tensor = tensor.t()
                if tuple(tensor.shape) != tuple(ours[key].shape):
                    raise WeightsError(
                        f"{file}: {raw_key} has shape {tuple(tensor.shape)}, the model expects "
                        f"{tuple(ours[key].shape)} (does config.json match the weights?)"
                    )
                with torch.no_grad():
                    ours[key].copy_(tensor)
                seen.add(key)
    except SafetensorError as exc:
        raise WeightsError(f"{file} is not a readable safetensors file ({exc})") from exc
    except FileNotFoundError as exc:
        raise WeightsError(f"{file} is missing") from exc
    missing = sorted(set(ours) - seen)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WeightsError(f"{file}: missing tensors {shown}")


def build_model(base: str, weights: str) -> tuple[GPT2Classifier, BaseModel | None]:
    """The classifier for `--base` / `--weights`: pretrained weights loaded, or GPT-2's random initialisation
    in the named configuration (a folder's `config.json`, or the built-in one for a hub name)."""
    if weights not in ("pretrained", "random"):
        raise WeightsError(f"--weights must be 'pretrained' or 'random', not {weights!r}")
    if weights == "random":
        path = Path(base).expanduser()
        if path.is_dir():
            config = read_config(path)
            base_model = BaseModel(name=path.name, path=path)
        elif is_known_name(base):
            config, base_model = CONFIGS[base], None
        else:
            raise WeightsError(
                f"unknown base model {base!r}: use one of {', '.join(HUB_REPOS)} or a folder with config.json"
            )
        return GPT2Classifier(config), base_model
    base_model = fetch(base)
    model = GPT2Classifier(base_model.config())
    load_pretrained(model, base_model)
    return model, base_model
