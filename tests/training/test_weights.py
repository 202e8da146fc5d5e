"""Loading GPT-2 checkpoints in the Hugging Face layout, through the same code that loads the real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spamguard.training.errors import WeightsError
from spamguard.training.gpt2 import CONFIGS, GPT2Classifier, GPTConfig
from spamguard.training.weights import build_model, fetch

from hf_gpt2 import TINY, hf_tensors, reference_hidden, write_checkpoint


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    return hf_tensors(**TINY, seed=1)


def test_loaded_model_matches_reference_forward(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    model, base = build_model(str(write_checkpoint(tmp_path / "gpt2-tiny", tensors)), "pretrained")
    assert base is not None and base.name == "gpt2-tiny"
    ids = torch.randint(0, 50257, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.ln_f(model.prefix(ids, model.config.n_layer))
    expected = reference_hidden(tensors, TINY["n_head"], ids)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


def test_conv1d_weights_are_transposed(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    model, _ = build_model(str(write_checkpoint(tmp_path / "ckpt", tensors)), "pretrained")
    assert torch.equal(model.h[1].attn.c_attn.weight, tensors["h.1.attn.c_attn.weight"].t())
    assert torch.equal(model.h[0].mlp.c_proj.weight, tensors["h.0.mlp.c_proj.weight"].t())
    assert torch.equal(model.wte.weight, tensors["wte.weight"])


def test_transformer_prefix_and_tied_head_are_accepted(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    prefixed = {f"transformer.{k}": v for k, v in tensors.items()} | {"lm_head.weight": tensors["wte.weight"].clone()}
    model, _ = build_model(str(write_checkpoint(tmp_path / "ckpt", prefixed)), "pretrained")
    assert torch.equal(model.ln_f.bias, tensors["ln_f.bias"])


def test_missing_tensor_is_named(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    del tensors["h.1.mlp.c_fc.bias"]
    with pytest.raises(WeightsError, match=r"missing tensors h\.1\.mlp\.c_fc\.bias"):
        build_model(str(write_checkpoint(tmp_path / "ckpt", tensors)), "pretrained")


def test_extra_tensor_is_named(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors["h.0.attn.rotary"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"unexpected tensor 'h\.0\.attn\.rotary'"):
        build_model(str(write_checkpoint(tmp_path / "ckpt", tensors)), "pretrained")


def test_config_that_does_not_match_weights(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", tensors)
    write_checkpoint(folder, tensors, n_embd=64)  # config.json now claims a wider model
    with pytest.raises(WeightsError, match=r"has shape .* the model expects .*does config.json match"):
        build_model(str(folder), "pretrained")


def test_corrupt_safetensors_file(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:1000])
    with pytest.raises(WeightsError, match=r"not a readable safetensors file"):
        build_model(str(folder), "pretrained")


def test_folder_missing_hub_files(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt")
    (folder / "merges.txt").unlink()
    with pytest.raises(WeightsError, match=r"lacks merges\.txt"):
        fetch(str(folder))


def test_unknown_base_name() -> None:
    with pytest.raises(WeightsError, match="unknown base model 'gpt3'"):
        build_model("gpt3", "pretrained")


def test_offline_without_cache_names_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match=r"--base FOLDER.*--weights random --tokenizer DIR"):
        fetch("gpt2")


def test_random_weights_take_config_from_folder(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", n_layer=3)
    (folder / "model.safetensors").unlink()
    model, _ = build_model(str(folder), "random")
    assert model.config.n_layer == 3 and model.config.n_embd == TINY["n_embd"]


def test_named_configs_have_gpt2_parameter_counts() -> None:
    sizes = {
        name: sum(p.numel() for n, p in GPT2Classifier(c).named_parameters() if not n.startswith("head."))
        for name, c in CONFIGS.items()
        if name in ("gpt2", "gpt2-medium")
    }
    assert round(sizes["gpt2"] / 1e6) == 124 and round(sizes["gpt2-medium"] / 1e6) == 355


def test_split_at_any_block_equals_forward() -> None:
    torch.manual_seed(0)
    model = GPT2Classifier(GPTConfig(n_layer=3, n_head=2, n_embd=16, n_positions=64)).eval()
    ids = torch.randint(0, 50257, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    with torch.no_grad():
        full = model(ids, lengths)
        for start in range(4):
            assert torch.allclose(model.tail(model.prefix(ids, start), lengths, start), full, atol=1e-6)
        # the last-position shortcut in the final block equals running the whole block and reading there
        x = model.h[2](model.prefix(ids, 2))
        plain = model.head(model.ln_f(x[torch.arange(3), lengths - 1]))
    assert torch.allclose(plain, full, atol=1e-6)


def test_padding_does_not_change_logits() -> None:
    torch.manual_seed(0)
    model = GPT2Classifier(GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=64)).eval()
    ids = torch.randint(0, 50256, (1, 6))
    padded = torch.cat([ids, torch.full((1, 10), 50256)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(ids, torch.tensor([6])), model(padded, torch.tensor([6])), atol=1e-6)


def test_safetensors_with_wrong_dtype_names_are_still_checked(tmp_path: Path, tensors: dict) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", tensors)
    save_file({"wte.weight": tensors["wte.weight"]}, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing tensors"):
        build_model(str(folder), "pretrained")
