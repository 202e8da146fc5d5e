"""Errors of the training half; each is a `SpamguardError`, so the CLI prints it as one line."""

from spamguard.errors import DataError, SpamguardError

__all__ = ["DataError", "ExportError", "TrainingError", "WeightsError"]  # DataError: the runtime's, shared


class WeightsError(SpamguardError):
    """Base weights cannot be found, downloaded, or matched to the model."""


class TrainingError(SpamguardError):
    """Training settings that cannot work (an unknown --trainable, a token budget the model cannot hold)."""


class ExportError(SpamguardError):
    """The exported model does not reproduce the trained one."""
