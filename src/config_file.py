"""``--config FILE``: training options from a YAML or JSON file, under the command line.

The keys are ``RunConfig``'s field names (``batch_size``, ``lr``, ...), the same options
the flags set (both generated from the fields' metadata; a test keeps the two sets equal), plus ``dataset_options`` and ``model_options`` as mappings and
``imports`` as a list of plug-in specs (what ``--import`` takes). Flags given on the
command line win; for the two option mappings they win key by key. An unknown key, a
value of the wrong type or out of range is one ``ConfigError`` naming the file and the
key; nothing is written before it. The file's values are checked together with the
command line's, once (``RunConfig.validate`` on the merged configuration). Paths in the file (``data_dir``, a ``dataset`` folder,
``imports``) are read from the current directory, like the flags. The resolved
configuration is what the experiment records in ``config.json``.

A ``.json`` file is read as JSON; anything else as YAML (PyYAML's ``safe_load``: plain
data only). YAML 1.1 reads ``1e-3`` as text; a float option accepts such a number
written as text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, Dict, List

from .config import RECORDED_KEYS, ConfigError, RunConfig, dataset_from_path

# The keys a file may hold: every option a user chooses (not what the run records itself).
CONFIG_FILE_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in RECORDED_KEYS)
MAX_CONFIG_BYTES = 1 << 20


def _field_types() -> Dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def read_config_file(path: Any) -> Dict[str, Any]:
    """The options in ``path`` (a YAML or JSON mapping), checked for known keys and value
    types; ``imports`` stays a list of plug-in specs (import them with ``import_plugins``).

    Raises:
        ConfigError: a missing, unreadable or unparsable file, a file that is not a
            mapping, unknown keys (the valid ones are listed), or a value of the wrong
            type (naming the file and the key).
    """
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"--config {path} is not valid JSON ({exc}); fix the file.") from None
    else:
        data = _load_yaml(path, text)
    if data is None:
        data = {}  # an empty file, or only comments
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {path} must hold a mapping of option names to values "
            f"(like 'epochs: 10'), got a {type(data).__name__}."
        )
    bad_keys = sorted(repr(k) for k in data if not isinstance(k, str))
    if bad_keys:
        raise ConfigError(
            f"--config {path} has key(s) {', '.join(bad_keys)} that are not option names; "
            f"known keys: {', '.join(sorted(CONFIG_FILE_KEYS))}."
        )
    unknown = sorted(set(data) - set(CONFIG_FILE_KEYS))
    if unknown:
        hints = [
            f"{k} (did you mean {k.replace('-', '_')}?)" if k.replace("-", "_") in CONFIG_FILE_KEYS else k
            for k in unknown
        ]
        raise ConfigError(
            f"Unknown configuration key(s) {', '.join(hints)} in {path}; "
            f"known keys: {', '.join(sorted(CONFIG_FILE_KEYS))}."
        )
    types = _field_types()
    values = {}
    for key, value in data.items():
        if key == "imports":
            values[key] = _check_imports(path, value)
        else:
            values[key] = _check_type(path, key, value, types[key])
    return values


def _read_text(path: Path) -> str:
    try:
        if path.is_dir():
            raise ConfigError(f"--config {path} is a directory; give a .yaml or .json file.")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"--config {path} is {size:,} bytes; a configuration file is at most "
                f"{MAX_CONFIG_BYTES:,} bytes. Is it the right file?"
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"--config {path}: no such file; give the path of a .yaml or .json file (the recipes are in configs/)."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not UTF-8 text; give a .yaml or .json file.") from None
    except OSError as exc:
        raise ConfigError(f"--config {path} cannot be read ({exc.strerror or exc}).") from None


def _load_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"--config {path} is YAML, which needs PyYAML: pip install pyyaml (or give a .json file)."
        ) from None
    try:
        # Aliases (*name) could make a small file expand into a huge structure when it is
        # checked; an options file has no need for them.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(f"--config {path} uses YAML aliases (*name); write the values out instead.")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--config {path} is not valid YAML{line} ({problem}); fix the file.") from None


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_type(path: Path, key: str, value: Any, kind: Any) -> Any:
    """``value`` if it fits the field type ``kind`` (a float given as text is converted)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    wanted = None
    if kind is bool:
        ok, wanted = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        wanted = "a finite number"
    elif kind is str:
        ok, wanted = isinstance(value, str), "text"
    elif origin is dict:
        ok, wanted = isinstance(value, dict) and all(isinstance(k, str) for k in value), "a mapping of names to values"
    elif origin is list:
        ok, wanted = isinstance(value, list), "a list"
    else:  # a type this reader does not know: RunConfig.validate judges it
        ok = True
    if not ok:
        hint = " (YAML reads off/no/yes/on as true or false: quote it)" if isinstance(value, bool) else ""
        raise ConfigError(f"--config {path}: {key} must be {wanted}, got {_describe(value)}{hint}.")
    return float(value) if kind is float else value


def _check_imports(path: Path, value: Any) -> List[str]:
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, list) or not all(isinstance(s, str) and s.strip() for s in specs):
        raise ConfigError(
            f"--config {path}: imports must be a list of module names or .py paths "
            f"(what --import takes), got {_describe(value)}."
        )
    return list(specs)


def check_config_values(path: Any, values: Dict[str, Any]) -> None:
    """Check a config file's values together, as one configuration (the options it does
    not set at their defaults), after its plug-ins are imported, so an error names the file
    and the key. ``train.py`` does not call this: it checks the file merged with the
    command line once, in ``RunConfig.validate`` (a file's ``warmup_epochs: 25`` is judged
    against the run's ``epochs``, not the default), and names the file the same way.

    Raises:
        ConfigError: ``"--config FILE: key: <what is wrong>"``.
    """
    values = {k: v for k, v in values.items() if k != "imports"}
    try:
        if "dataset" in values:
            folder = dataset_from_path(values["dataset"], values.get("dataset_options", {}))
            if folder is not None:  # a folder of images: it exists (dataset_from_path checked)
                values["dataset"], values["dataset_options"] = folder
        RunConfig(**values).validate()
    except ConfigError as exc:
        key = exc.key if exc.key is not None else "configuration"
        raise ConfigError(f"--config {path}: {key}: {exc}", key=exc.key) from None


def merge_config_values(values: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The run's overrides: the file's ``values`` under the command line's ``overrides``
    (option mappings merged key by key, the command line winning); ``imports`` is
    handled by the caller (both lists are imported together)."""
    merged = {k: v for k, v in values.items() if k != "imports"}
    for key in ("dataset_options", "model_options"):
        if key in merged and key in overrides:
            overrides = {**overrides, key: {**merged[key], **overrides[key]}}
    merged.update(overrides)
    return merged
