"""Installed models: bundles copied into the user data dir under a name, one of which is the default.

A service names its model explicitly (`--model PATH`); people at a shell rely on the default, which
`spamguard train` sets, so `cat mail.eml | spamguard check` works with no options."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from spamguard.bundle import Bundle, load_bundle, read_manifest
from spamguard.errors import BundleError
from spamguard.paths import data_dir, models_dir

MODEL_ENV = "SPAMGUARD_MODEL"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _config_path() -> Path:
    return data_dir() / "config.json"


def _read_config() -> dict:
    try:
        return json.loads(_config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {_config_path()}: {exc}") from exc


def _write_config(config: dict) -> None:
    path = _config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BundleError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


def installed() -> list[str]:
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def default_name() -> str | None:
    return _read_config().get("default_model")


def set_default(name: str) -> None:
    if name not in installed():
        raise BundleError(f"no installed model named {name!r} (installed: {', '.join(installed()) or 'none'})")
    config = _read_config()
    config["default_model"] = name
    _write_config(config)


def install(source: Path, name: str | None = None, *, make_default: bool = False, replace: bool = False) -> Path:
    """Copy a verified bundle into the models dir; the bundle's own name is used unless another is given."""
    bundle = load_bundle(Path(source))
    name = check_name(name or bundle.name)
    target = models_dir() / name
    if target.exists():
        if not replace:
            raise BundleError(f"a model named {name!r} is already installed (remove it first, or pick another name)")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{name}.installing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle.path, staging)
    staging.rename(target)
    if make_default or default_name() is None:
        set_default(name)
    return target


def remove(name: str) -> None:
    target = models_dir() / check_name(name)
    if not target.is_dir():
        raise BundleError(f"no installed model named {name!r}")
    shutil.rmtree(target)
    if default_name() == name:
        config = _read_config()
        config.pop("default_model", None)
        _write_config(config)


def resolve(model: str | os.PathLike | None = None) -> Path:
    """Find the bundle a caller means: a path, an installed name, `$SPAMGUARD_MODEL`, or the default."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV)
    if chosen is not None and str(chosen) != "":
        candidate = Path(chosen).expanduser()
        if candidate.is_dir():
            return candidate
        if _NAME.match(str(chosen)) and (models_dir() / str(chosen)).is_dir():
            return models_dir() / str(chosen)
        raise BundleError(
            f"no model {str(chosen)!r}: not a bundle directory nor an installed model "
            f"(installed: {', '.join(installed()) or 'none'})"
        )
    name = default_name()
    if name is None:
        raise BundleError(
            "no model installed: run 'spamguard train' or 'spamguard models install PATH', or pass --model PATH"
        )
    path = models_dir() / name
    if not path.is_dir():
        raise BundleError(f"the default model {name!r} is missing from {models_dir()} (run 'spamguard models')")
    return path


def open_model(model: str | os.PathLike | None = None, *, verify: bool = True) -> Bundle:
    return load_bundle(resolve(model), verify=verify)


def describe(name: str) -> dict:
    return read_manifest(models_dir() / name)
