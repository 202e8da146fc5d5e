"""One exception family for the runtime, so the CLI and the plugins can turn any of them into one clear line."""


class SpamguardError(Exception):
    """Base of every error spamguard raises on purpose; its message is meant for the user, as one line."""


class BundleError(SpamguardError):
    """A model bundle is missing, corrupt, too new, or otherwise unusable."""


class TokenizerError(SpamguardError):
    """The BPE files cannot be turned into GPT-2's tokenizer."""


class DataError(SpamguardError):
    """A labelled data set (an SMS file, a mail source) is missing or malformed."""
