"""The one error hierarchy, and the exit code each kind of error maps to.

Every error the package raises on purpose derives from ``ExptrainError`` and carries its
``exit_code``; ``train.py`` prints the message (one sentence: the bad value and what to
do) and exits with that code. The concrete classes also keep the built-in base they had
(``ValueError``, ``RuntimeError``, ``OSError``) so existing ``except`` clauses still work.

| code | class | meaning |
| --- | --- | --- |
| 1 | ``WriteError`` | a file could not be written (disk full, permissions); older files intact |
| 2 | ``BadInputError`` | bad input: options, names, data, experiments; nothing was written |
| 3 | ``NonFiniteLossError`` | training diverged (NaN/inf loss); the last good checkpoints are kept |
| 128+N | ``TrainingInterrupted`` | stopped by signal N (see ``training/interrupts.py``) |
"""

from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
DEBUG_ENV = "EXPTRAIN_DEBUG"  # set to 1 to see the traceback of an unexpected error


class ExptrainError(Exception):
    """Base of every deliberate error; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class BadInputError(ExptrainError):
    """Bad input (an option, a name, a data file, an experiment's files); nothing was written."""

    exit_code = EXIT_BAD_INPUT


class WriteError(ExptrainError):
    """A file could not be written; what was there before is intact."""

    exit_code = EXIT_FAILED


class NonFiniteLossError(ExptrainError):
    """The training or validation loss (or the model) became NaN or infinite."""

    exit_code = EXIT_DIVERGED


def write_error(path, exc: OSError, what: str = "write") -> WriteError:
    """A ``WriteError`` for an ``OSError`` raised while writing ``path``."""
    reason = exc.strerror or str(exc)
    return WriteError(
        f"Could not {what} {path}: {reason}; the files written before are intact. "
        "Free disk space or fix the permissions, then resume the run."
    )


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().strip("'\"") or type(exc).__name__
    return text.splitlines()[0]


def report_error(exc: Exception, os_note: str = ".") -> int:
    """Print ``exc`` on stderr as one line and return the exit code it maps to: an
    ``ExptrainError`` its own, a library's bad-value error (ValueError, KeyError,
    TypeError) ``EXIT_BAD_INPUT``, an ``OSError`` (followed by ``os_note``) and anything
    unexpected ``EXIT_FAILED``. With ``$EXPTRAIN_DEBUG`` set, an unexpected error is
    re-raised for its traceback."""
    if isinstance(exc, ExptrainError):
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"Error: {exc.strerror or exc}{where}{os_note}", file=sys.stderr)
        return EXIT_FAILED
    if os.environ.get(DEBUG_ENV):
        raise exc
    print(f"Error: unexpected {type(exc).__name__}: {one_line(exc)} (set {DEBUG_ENV}=1 for the traceback).",
          file=sys.stderr)
    return EXIT_FAILED
