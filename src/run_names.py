"""Run names (``--name``): a label that is unique in its runs directory and may stand for
``expN`` wherever an experiment is named (``--resume``, ``--fork``, the ``exptrain`` tools).

The name is stored as ``name`` in the experiment's ``config.json``; resolving it reads
those files and nothing else (strictly read-only, no torch), so it is safe against a
running experiment. A name may not look like an experiment directory (``exp12``), hold a
path separator, or start with ``-`` (it would read as a flag), so a name and a directory
can never be confused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .layout import CONFIG_FILE, NAME_PATTERN

MAX_NAME_LENGTH = 100
MAX_NOTES_LENGTH = 10_000
_EXP_NUMBER = re.compile(r"^exp\d+$", re.IGNORECASE)


def name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot be a run name (one sentence), or None when it can."""
    if not isinstance(name, str):
        return f"name must be text, got {name!r}."
    if not name.strip():
        return "name must not be empty; give a short label such as baseline-lr3e-3."
    if len(name) > MAX_NAME_LENGTH:
        return f"name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}."
    if name != name.strip():
        return f"name {name!r} starts or ends with a space; remove it."
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"name {name!r} contains a control character (a newline, a tab); use plain text."
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"name {name!r} contains a path separator; use a plain label such as baseline-lr3e-3."
    if name.startswith("-"):
        return f"name {name!r} starts with '-' and would read as a flag; start it with a letter or digit."
    if _EXP_NUMBER.match(name):
        return f"name {name!r} looks like an experiment directory (expN); choose a label that does not."
    return None


def notes_problem(notes: Any) -> Optional[str]:
    """Why ``notes`` cannot be a run's notes, or None when they can."""
    if not isinstance(notes, str):
        return f"notes must be text, got {notes!r}."
    if len(notes) > MAX_NOTES_LENGTH:
        return f"notes are {len(notes)} characters long; keep them under {MAX_NOTES_LENGTH}."
    return None


def _experiment_dirs(runs_dir: Path) -> List[str]:
    try:
        return sorted(p.name for p in Path(runs_dir).iterdir() if NAME_PATTERN.match(p.name) and p.is_dir())
    except OSError:
        return []


def _recorded_name(experiment_dir: Path) -> Optional[str]:
    """The ``name`` in an experiment's config.json (None when absent, unreadable or damaged)."""
    try:
        with open(Path(experiment_dir) / CONFIG_FILE, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def run_names(runs_dir: Path) -> Dict[str, str]:
    """``{experiment directory: name}`` for every named experiment in ``runs_dir``."""
    names = {}
    for directory in _experiment_dirs(Path(runs_dir)):
        name = _recorded_name(Path(runs_dir) / directory)
        if name is not None:
            names[directory] = name
    return names


def experiments_named(runs_dir: Path, name: str) -> List[str]:
    """The experiment directories of ``runs_dir`` whose config.json records ``name``."""
    return [directory for directory, recorded in run_names(runs_dir).items() if recorded == name]


def resolve_experiment(runs_dir: Path, reference: Any, error=ValueError) -> Any:
    """The experiment directory name that ``reference`` (``expN``, any directory name, or
    a run name) stands for in ``runs_dir``. A reference that is neither an existing
    directory nor a recorded name is returned unchanged, so the caller's own check names
    it as missing and lists the existing experiments.

    Raises:
        error: (the caller's error class) two experiments record the name.
    """
    if not isinstance(reference, str) or not reference:
        return reference
    if NAME_PATTERN.match(reference) and os.path.isdir(os.path.join(runs_dir, reference)):
        return reference
    matches = experiments_named(Path(runs_dir), reference)
    if len(matches) > 1:
        raise error(
            f"The name {reference!r} is recorded by {' and '.join(matches)} in {runs_dir}; "
            f"give the experiment directory ({matches[0]}) instead."
        )
    return matches[0] if matches else reference


def check_name_free(runs_dir: Path, name: Optional[str], error=ValueError, exclude: Optional[str] = None) -> None:
    """Refuse ``name`` when an experiment of ``runs_dir`` (other than ``exclude``) already
    records it, or a directory there is called that.

    Raises:
        error: (the caller's error class) naming the experiment that holds the name.
    """
    if name is None or not Path(runs_dir).is_dir():
        return
    taken = [d for d in experiments_named(Path(runs_dir), name) if d != exclude]
    if taken:
        raise error(
            f"The name {name!r} is already used by {taken[0]} in {runs_dir}; choose another --name "
            f"(names are unique per runs directory), or continue that run with --resume {name}."
        )
    if name != exclude and os.path.isdir(os.path.join(runs_dir, name)):
        raise error(f"The name {name!r} is the name of an experiment directory in {runs_dir}; choose another --name.")
