"""Training half of spamguard (needs the `train` extra: torch, onnx, huggingface_hub, safetensors)."""
