"""Where spamguard keeps its files, in one place so tests and services can redirect all of it at once."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "spamguard"
HOME_ENV = "SPAMGUARD_HOME"
DATASETS_ENV = "SPAMGUARD_DATA"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Models, the feedback corpus and config: `$SPAMGUARD_HOME` if set, else the platform's user data dir."""
    home = _home()
    return home if home is not None else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Downloads (weights, data sets) that can be fetched again: `$SPAMGUARD_HOME/cache` or the user cache dir."""
    home = _home()
    return home / "cache" if home is not None else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def models_dir() -> Path:
    """Installed bundles live here, one folder per model name."""
    return data_dir() / "models"


def datasets_dir() -> Path:
    """Public data sets for training and benchmarks (the SMS Spam Collection, the SpamAssassin public corpus,
    GPT-2's BPE files), as the downloads leave them: `$SPAMGUARD_DATA` to use a local copy in the same layout
    (this project's machines point it at `../shared/data`), else `datasets/` in the cache dir."""
    value = os.environ.get(DATASETS_ENV)
    return Path(value).expanduser() if value else cache_dir() / "datasets"
