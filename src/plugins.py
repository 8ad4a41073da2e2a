"""Plug-ins: user code that ``train.py --import`` imports before the registries are consulted.

A plug-in is a module importable from the current directory (``mypkg.models``) or a path
to a ``.py`` file; importing it runs its ``@ModelRegistry.register(...)`` and
``@DatasetRegistry.register(...)`` decorators, so ``--model`` / ``--dataset`` can name
what it defines. Each import is recorded in the run's configuration as ``{"module": the
plug-in as given, "path": its absolute file, "sha256": of the file's bytes}``, and
``--resume`` / ``--fork`` import the recorded files again: a resume refuses a plug-in
whose file changed (the run would no longer be a continuation), a fork accepts it and
records the new hash. Only the named file is hashed, not the modules it imports.

Importing is idempotent within a process (the same file with the same bytes is not run
twice), so the Python API and tests may import a plug-in repeatedly. Python users can
simply ``import`` their module; this module is what the command line needs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import reprlib
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple
from .errors import ConfigError, DEBUG_ENV
from .datasets import DatasetRegistry
from .models import ModelRegistry
from .optim import OptimizerRegistry, SchedulerRegistry

MODULE_PREFIX = "exptrain_plugin_"  # a .py file is imported as exptrain_plugin_<stem>
RECORD_KEYS = ("module", "path", "sha256")
_REGISTRIES = (ModelRegistry, DatasetRegistry, OptimizerRegistry, SchedulerRegistry)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ALREADY_REGISTERED = re.compile(r"The (\w+) name (.+) is already registered\.")  # Registry.register's message

# Absolute path -> what this process imported from it: the hash of the bytes run, the
# module name, and the registry names the import added (undone if the file is re-imported
# with other contents).
_loaded: Dict[str, Dict[str, Any]] = {}
_warned: set = set()  # (path, old hash, new hash) a fork already warned about


def import_plugins(specs: Iterable[str]) -> List[Dict[str, str]]:
    """Import each plug-in and return its record (``{"module", "path", "sha256"}``).

    Args:
        specs: module names importable from the current directory (``mypkg.models``) or
            paths to ``.py`` files (a single string is one plug-in). A file given twice is
            imported and recorded once.

    Raises:
        ConfigError: a plug-in that cannot be found or read, raises while importing, or
            registers a model or data set name that is already taken (its registrations
            are undone); the message names the plug-in and the first line of the error.

    Example::

        records = import_plugins(["examples/plugin_example.py"])  # registers tiny_cnn, stripes
    """
    if isinstance(specs, str):
        specs = [specs]
    records: List[Dict[str, str]] = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"--import expects a module name or a path to a .py file, got {spec!r}.")
        record = _import_path(spec) if _is_path(spec) else _import_module(spec)
        if all(r["path"] != record["path"] for r in records):
            records.append(record)
    return records


def verify_plugins(
    records: Any,
    purpose: str = "resume",
    experiment: Optional[str] = None,
    log=print,
    source: str = "the configuration",
) -> List[Dict[str, str]]:
    """Import the plug-ins a run recorded again, checking each file against its hash.

    Args:
        records: the run's ``imports``.
        purpose: ``"resume"`` refuses a changed file (nothing is imported from it);
            ``"fork"`` imports it, prints a warning line and returns its new hash.
        experiment: the run's name, for the messages.
        source: where the records come from (``runs/exp1/config.json``), for the messages.

    Returns:
        The records to keep: unchanged for a resume, with new hashes for a fork.

    Raises:
        ConfigError: damaged records; a recorded file that is missing, or (resume) changed,
            or that now fails to import; a module name that now finds another file.
    """
    if purpose not in ("resume", "fork"):
        raise ValueError(f"purpose must be 'resume' or 'fork', got {purpose!r}.")
    check_records(records, source)
    name = experiment or "the run"
    verified = []
    for record in records:
        module, path, recorded = record["module"], Path(record["path"]), record["sha256"]
        try:
            source_bytes = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"plug-in {module} is missing: {name} imports {path}, which no longer exists; restore it there "
                "(--resume and --fork import the plug-ins a run recorded)."
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"plug-in {module} ({path}) cannot be read ({exc.strerror or exc}); fix its permissions and try again."
            ) from None
        digest = hashlib.sha256(source_bytes).hexdigest()
        if digest != recorded:
            if purpose == "resume":
                raise ConfigError(
                    f"plug-in {module} changed since the run started (sha256 {recorded[:12]}... -> {digest[:12]}...); "
                    f"resume needs the same code: restore it, or --fork {experiment or 'EXP'} "
                    "to continue with the new code."
                )
            if (str(path), recorded, digest) not in _warned:
                _warned.add((str(path), recorded, digest))
                log(
                    f"Warning: plug-in {module} changed since {name} recorded it (sha256 {recorded[:12]}... -> "
                    f"{digest[:12]}...); the fork uses the new code and records its hash."
                )
        if _is_path(module):
            _load_file(module, path, source_bytes, digest)
        else:
            _reimport_module(module, path)
        verified.append({"module": module, "path": str(path), "sha256": digest})
    return verified


def check_records(records: Any, source: str = "the configuration") -> None:
    """Raise ``ConfigError`` unless ``records`` is a list of ``{"module", "path", "sha256"}``
    records with text values, an absolute path and a SHA-256 in hex (as written by
    ``import_plugins``)."""
    if not isinstance(records, list):
        raise ConfigError(f"imports in {source} must be a list of plug-in records, got {reprlib.repr(records)}.")
    for record in records:
        if (
            not isinstance(record, dict)
            or sorted(record) != sorted(RECORD_KEYS)
            or not all(isinstance(record[k], str) and record[k] for k in RECORD_KEYS)
            or not os.path.isabs(record["path"])
            or not _SHA256.fullmatch(record["sha256"])
        ):
            raise ConfigError(
                f"imports in {source} holds {reprlib.repr(record)}, not a plug-in record "
                '{"module": ..., "path": absolute file, "sha256": 64 hex digits} as import_plugins writes; '
                "restore the file, or start a new run with --import."
            )


def check_resume_imports(recorded: List[Dict[str, str]], given: List[Dict[str, str]], experiment: str) -> None:
    """A resume may repeat the run's own ``--import`` s, never add one.

    Raises:
        ConfigError: naming the first plug-in the run did not record.
    """
    paths = {r["path"] for r in recorded}
    for record in given:
        if record["path"] not in paths:
            imported = ", ".join(r["module"] for r in recorded) or "none"
            raise ConfigError(
                f"--resume {experiment} cannot add plug-in {record['module']} (the run imports: {imported}); "
                f"resume without it, or branch with --fork {experiment} --import {record['module']}."
            )


def merge_imports(recorded: List[Dict[str, str]], given: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """A fork's imports: the parent's, then the new ones (a file already recorded once)."""
    paths = {r["path"] for r in recorded}
    return list(recorded) + [r for r in given if r["path"] not in paths]


# -- importing --------------------------------------------------------------------------
def _is_path(spec: str) -> bool:
    """A path (``x.py``, ``dir/x``, or an existing file like ``notes.txt``), not a module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec or os.path.isfile(spec)


def _import_path(spec: str) -> Dict[str, str]:
    path = Path(spec)
    try:
        path = path.expanduser().resolve()
        if path.is_dir():
            raise ConfigError(
                f"--import {spec} is a directory; give a .py file, or the package as a module name "
                "(run from the directory that holds it)."
            )
        if path.suffix != ".py":
            raise ConfigError(
                f"--import {spec} is not a .py file; give a .py file or a module name (like mypkg.models)."
            )
        source_bytes = path.read_bytes()
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(
            f"--import {spec}: no such file ({path}); give a path to a .py file, "
            "or a module name importable from the current directory."
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:  # unreadable, a NUL byte, an unknown ~user
        raise ConfigError(f"--import {spec}: cannot read {path} ({getattr(exc, 'strerror', None) or exc}).") from None
    digest = hashlib.sha256(source_bytes).hexdigest()
    _load_file(spec, path, source_bytes, digest)
    return {"module": spec, "path": str(path), "sha256": digest}


def _load_file(spec: str, path: Path, source_bytes: bytes, digest: str) -> None:
    """Run ``source_bytes`` (the bytes just hashed, so the hash is of the code that ran) as
    the module of ``path``, with the file's own directory on ``sys.path`` meanwhile."""
    key = str(path)
    previous = _loaded.get(key)
    if previous is not None and previous["sha256"] == digest:
        return
    if previous is not None:  # other contents in the same process (a fork from Python): replace it
        _forget(_loaded.pop(key))
    name = previous["module_name"] if previous is not None else _module_name(path)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look it up there

    def run() -> None:
        exec(compile(source_bytes, key, "exec", dont_inherit=True), module.__dict__)

    try:
        added = _run_recording(spec, run, extra_path=str(path.parent))
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _loaded[key] = {"sha256": digest, "module_name": name, "registered": added}


def _module_name(path: Path) -> str:
    """``exptrain_plugin_<stem>``; another file with the same stem gets a suffix from its path."""
    name = MODULE_PREFIX + re.sub(r"\W", "_", path.stem)
    taken = sys.modules.get(name)
    if taken is not None and getattr(taken, "__file__", None) != str(path):
        name += "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return name


def _import_module(spec: str) -> Dict[str, str]:
    if not all(part.isidentifier() for part in spec.split(".")):
        raise ConfigError(f"--import {spec} is neither a path to a .py file nor a module name (like mypkg.models).")
    path, digest = _load_module(spec, os.getcwd())
    return {"module": spec, "path": str(path), "sha256": digest}


def _reimport_module(spec: str, path: Path) -> None:
    """Import module ``spec`` from the directory its recorded ``path`` implies (so a resume
    need not run from the original directory), and check that it is that file."""
    found, _ = _load_module(spec, _package_root(spec, path) or os.getcwd())
    if found != path:
        _forget(_loaded.pop(str(found), {}))
        raise ConfigError(
            f"plug-in {spec} now imports {found}, not the recorded {path}; run from the directory "
            "the run was started in, or restore the original module."
        )


def _load_module(spec: str, root: str) -> Tuple[Path, str]:
    """Import module ``spec`` with ``root`` first on ``sys.path``; returns its file and the
    hash of the bytes that ran. A module already imported is kept unless its file changed
    since this process imported it."""
    module = sys.modules.get(spec)
    if module is not None:
        path = _module_file(spec, module)
        digest = _hash_file(spec, path)
        previous = _loaded.get(str(path))
        if previous is None or previous["sha256"] == digest:
            return path, digest
        _forget(_loaded.pop(str(path)))  # other contents in the same process: run the new ones
    result: Dict[str, Any] = {}

    def run() -> None:
        importlib.invalidate_caches()  # a package made a moment ago must be found
        found = importlib.util.find_spec(spec)  # imports the parent packages
        if found is None:
            raise ModuleNotFoundError(f"No module named {spec!r}", name=spec)
        if not found.has_location or not found.origin:
            raise ConfigError(
                f"--import {spec} is a namespace package with no file of its own; "
                f"import one of its modules (like {spec}.models) instead."
            )
        path = Path(found.origin).resolve()
        if path.suffix != ".py":  # a compiled module: the import system loads it
            importlib.import_module(spec)
            result.update(path=path, sha256=_hash_file(spec, path))
            return
        source_bytes = _read(spec, path)
        digest = hashlib.sha256(source_bytes).hexdigest()
        result.update(path=path, sha256=digest)
        previous = _loaded.get(str(path))
        if previous is not None and previous["sha256"] == digest:  # this file already ran (given as a path)
            result["ran"] = False
            return
        if previous is not None:
            _forget(_loaded.pop(str(path)))
        module = importlib.util.module_from_spec(found)
        sys.modules[spec] = module
        try:
            # The bytes just hashed are the code that runs (a stale .pyc cannot stand in).
            exec(compile(source_bytes, str(path), "exec", dont_inherit=True), module.__dict__)
        except BaseException:
            sys.modules.pop(spec, None)
            raise
        parent, _, child = spec.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)

    added = _run_recording(spec, run, extra_path=root)
    if result.get("ran", True):
        _loaded[str(result["path"])] = {"sha256": result["sha256"], "module_name": spec, "registered": added}
    return result["path"], result["sha256"]


def _hash_file(spec: str, path: Path) -> str:
    return hashlib.sha256(_read(spec, path)).hexdigest()


def _read(spec: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"plug-in {spec}: cannot read {path} ({exc.strerror or exc}).") from None


def _module_file(spec: str, module) -> Path:
    file = getattr(module, "__file__", None)
    if not file:
        raise ConfigError(
            f"--import {spec} is a namespace package with no file of its own; "
            f"import one of its modules (like {spec}.models) instead."
        )
    return Path(file).resolve()


def _package_root(spec: str, path: Path) -> Optional[str]:
    """The directory from which ``spec`` imports as ``path`` (None if they do not match)."""
    parts = spec.split(".")
    tail = parts + ["__init__.py"] if path.name == "__init__.py" else parts[:-1] + [parts[-1] + path.suffix]
    if len(path.parts) <= len(tail) or list(path.parts[-len(tail) :]) != tail:
        return None
    return str(Path(*path.parts[: -len(tail)]))


def _run_recording(spec: str, run, extra_path: str) -> List[Tuple[str, str]]:
    """Call ``run`` (the import) with ``extra_path`` first on ``sys.path``; return the
    ``(kind, name)`` registrations it added. On failure, undo them and raise one
    ``ConfigError`` naming the plug-in and the error's first line and place."""
    before = _registered()
    sys.path.insert(0, extra_path)
    try:
        run()
    except (Exception, SystemExit) as exc:
        _forget({"registered": _added(before)})
        if isinstance(exc, ConfigError):
            raise
        if os.environ.get(DEBUG_ENV):
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        raise ConfigError(_failure_message(spec, exc)) from None
    finally:
        try:
            sys.path.remove(extra_path)
        except ValueError:
            pass  # the plug-in removed it itself
    return _added(before)


def _registered() -> Dict[Tuple[str, str], Any]:
    return {(registry.kind, name): registry.get(name) for registry in _REGISTRIES for name in registry.names()}


def _added(before: Dict[Tuple[str, str], Any]) -> List[Tuple[str, str]]:
    """The registrations made since ``before`` (new names, and names forgotten and registered again)."""
    return [key for key, factory in _registered().items() if before.get(key) is not factory]


def _forget(previous: Dict[str, Any]) -> None:
    """Undo a plug-in's registrations (its import failed, or it is imported again with
    other contents). ``Registry`` offers no removal on purpose; only this undo needs one."""
    for kind, name in previous.get("registered", []):
        for registry in _REGISTRIES:
            if registry.kind == kind:
                registry._entries.pop(name, None)
    if previous.get("module_name"):
        sys.modules.pop(previous["module_name"], None)


def _failure_message(spec: str, exc: BaseException) -> str:
    taken = _ALREADY_REGISTERED.fullmatch(_first_line(exc)) if isinstance(exc, ValueError) else None
    if taken:
        return (
            f"plug-in {spec} registers the {taken.group(1)} name {taken.group(2)}, which is already taken "
            "(by a built-in or another plug-in); register it under another name."
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
        return (
            f"--import {spec}: no module named {exc.name!r} in the current directory ({os.getcwd()}) "
            "or on the Python path; run from the directory that holds it, or give the path to its .py file."
        )
    if isinstance(exc, SyntaxError):
        where = f" ({Path(exc.filename).name}, line {exc.lineno})" if exc.filename else ""
        return f"plug-in {spec} failed to import: SyntaxError: {exc.msg}{where}; fix it and try again."
    if isinstance(exc, SystemExit):
        return f"plug-in {spec} called sys.exit({exc.code!r}) while being imported; a plug-in must only define and register."
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return (
        f"plug-in {spec} failed to import: {type(exc).__name__}: {_first_line(exc)}{where}; fix it and try again "
        f"(set {DEBUG_ENV}=1 for the traceback)."
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
