"""Installed models: bundles copied into the user data dir under a name, one of which is the default.

A service names its model explicitly (`--model PATH`); people at a shell rely on the default, which
`spamguard train` sets, so `cat mail.eml | spamguard check` works with no options."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from spamguard.bundle import NAME_PATTERN, Bundle, check_name, load_bundle, write_manifest
from spamguard.errors import BundleError
from spamguard.paths import data_dir, models_dir

MODEL_ENV = "SPAMGUARD_MODEL"


def _config_path() -> Path:
    return data_dir() / "config.json"


def _read_config() -> dict:
    try:
        config = json.loads(_config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"cannot read {_config_path()}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if not isinstance(config, dict):
        raise BundleError(f"cannot read {_config_path()}: not a JSON object")
    return config


def _write_config(config: dict) -> None:
    path = _config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)


def installed() -> list[str]:
    """Names of the installed models (folders of the models dir; hidden ones are installs in progress)."""
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def shown(text: str) -> str:
    """A model name (or a message about one) as it may be printed: as it is when it is printable, else escaped
    (`ascii`), so a folder made by hand with a newline in its name cannot forge an output line."""
    return text if text.isprintable() else ascii(text)


def _installed_list() -> str:
    return ", ".join(shown(n) for n in installed()) or "none"


def default_name() -> str | None:
    name = _read_config().get("default_model")
    if name is not None and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        raise BundleError(
            f"invalid default model {name!a} in {_config_path()}: choose one with 'spamguard models default NAME'"
        )
    return name


def set_default(name: str) -> None:
    if name not in installed():
        raise BundleError(f"no installed model named {name!a} (installed: {_installed_list()})")
    config = _read_config()
    config["default_model"] = name
    _write_config(config)


def install(source: Path, name: str | None = None, *, make_default: bool = False, replace: bool = False) -> Path:
    """Copy a bundle into the models dir under `name` (default: the bundle's own name), which is then the name
    its verdicts and headers print. Only the files the manifest lists are copied, each a regular file of the
    bundle folder (never through a link), within the size limits, and checked against its sha256 as it is
    copied. The copy is staged in a hidden folder and renamed into place; any failure removes the staging."""
    bundle = load_bundle(Path(source), verify=False)
    name = check_name(name or bundle.name)
    root = models_dir()
    target = root / name
    if target.exists() and not replace:
        raise BundleError(f"a model named {name!r} is already installed (remove it first, or pick another name)")
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.installing-", dir=root))
        for file in bundle.files:
            bundle.copy_verified(file, staging / file)
        write_manifest(staging, {**bundle.manifest, "name": name})
        load_bundle(staging, verify=False)  # what was written reads back
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service running as another user
        _place(staging, target, replace=replace)
    except OSError as exc:
        raise BundleError(f"cannot install {name!r} into {root}: {exc.strerror or exc}") from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if make_default or default_name() is None:
        set_default(name)
    return target


def _place(staging: Path, target: Path, *, replace: bool) -> None:
    """Rename the staged copy into place; an installed model it replaces is moved aside first and deleted only
    once the new one is in place, so a failure leaves the old one installed. Without `replace`, a model of the
    same name installed meanwhile (by another install) stays, and this one fails."""
    old = None
    if target.exists() and not replace:
        raise BundleError(f"a model named {target.name!r} is already installed (remove it first, or pick another name)")
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove(name: str) -> bool:
    """Delete an installed model; True when it was the default, which is then cleared (no other model is
    chosen in its place: which one to use is the user's decision)."""
    target = models_dir() / check_name(name)
    if not target.is_dir():
        raise BundleError(f"no installed model named {name!r}")
    doomed = target.with_name(f".{name}.removing-{os.getpid()}")
    target.rename(doomed)  # gone from the registry at once; a failed delete leaves only a hidden folder
    shutil.rmtree(doomed, ignore_errors=True)
    was_default = default_name() == name
    if was_default:
        config = _read_config()
        config.pop("default_model", None)
        _write_config(config)
    return was_default


def resolve(model: str | os.PathLike | None = None) -> Path:
    """Find the bundle a caller means: a path, an installed name, `$SPAMGUARD_MODEL`, or the default."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV)
    if chosen is not None and str(chosen) != "":
        candidate = Path(chosen).expanduser()
        if candidate.is_dir():
            return candidate
        if NAME_PATTERN.fullmatch(str(chosen)) and (models_dir() / str(chosen)).is_dir():
            return models_dir() / str(chosen)
        raise BundleError(
            f"no model {str(chosen)!a}: not a bundle directory nor an installed model (installed: {_installed_list()})"
        )
    name = default_name()
    if name is None and installed():
        raise BundleError(
            f"no default model (installed: {_installed_list()}): choose one with 'spamguard models default NAME', "
            "or pass --model"
        )
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


def describe(name: str) -> Bundle:
    """An installed model's checked manifest, its files present but not hashed: enough for a listing."""
    return load_bundle(models_dir() / name, verify=False)
