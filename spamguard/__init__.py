"""spamguard: is this message spam? A GPT-2 classifier exported to ONNX, for mail and SMS."""
