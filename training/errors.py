"""Errors of the training half; each is a `SpamguardError`, so the CLI prints it as one line."""

from spamguard.errors import SpamguardError


class WeightsError(SpamguardError):
    """Base weights cannot be found, downloaded, or matched to the model."""


class DataError(SpamguardError):
    """A training data set is missing or malformed."""
