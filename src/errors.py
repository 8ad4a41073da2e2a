"""The one error hierarchy, and the exit code each kind of error maps to.

Every error the package raises on purpose derives from ``ExptrainError`` and carries its
``exit_code``; ``train.py`` prints the message (one sentence: the bad value and what to
do) and exits with that code. The concrete classes also keep the built-in base they had
(``ValueError``, ``RuntimeError``, ``OSError``) so existing ``except`` clauses still work.

| code | class | meaning |
| --- | --- | --- |
| 1 | ``WriteError`` | a file could not be written (disk full, permissions); older files intact |
| 1 | any other exception | a bug (here or in a plug-in): "unexpected error (a bug)", traceback with ``EXPTRAIN_DEBUG=1`` |
| 2 | ``BadInputError`` | bad input: options, names, data, experiments; nothing was written |
| 3 | ``NonFiniteLossError`` | training diverged (NaN/inf loss); the last good checkpoints are kept |
| 128+N | ``TrainingInterrupted`` | stopped by signal N (see ``training/interrupts.py``) |
"""

from __future__ import annotations

import os
import sys
import traceback

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


# -- the concrete errors, one per owner (defined here so that no module imports upward
# for an error class: data sets and models raise ConfigError without importing config).
class ConfigError(BadInputError, ValueError):
    """An invalid run configuration; the message names the bad value and what to do (exit code 2).
    ``key``: the ``RunConfig`` field at fault, when one is (a ``--config`` file's error names it)."""

    def __init__(self, message: str = "", key=None):
        super().__init__(message)
        self.key = key


class InputTypeError(BadInputError, TypeError):
    """A value of the wrong type given to the Python API (images that are not uint8); exit code 2."""


class UnknownNameError(BadInputError, KeyError):
    """A name no registry knows; the message lists the known names (exit code 2). A
    ``KeyError``, as the specification asks of ``Registry.create``, printed without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataError(BadInputError, RuntimeError):
    """A data set cannot be found, downloaded or read; the message says what to do (exit code 2)."""


class ExperimentError(BadInputError, ValueError):
    """A bad experiment name, a missing or busy experiment, a damaged record; the message
    says what to do (exit code 2)."""


class CheckpointError(BadInputError, RuntimeError):
    """A checkpoint cannot be verified or loaded; the message says why (exit code 2)."""


class CheckpointSaveError(CheckpointError, WriteError):
    """A save failed (disk full, unwritable directory); older checkpoints are intact (exit code 1)."""

    exit_code = WriteError.exit_code


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is damaged, does not match its manifest, or is not loadable."""


class PeerFailedError(ExptrainError):
    """Another process of the job stopped or cannot be reached; this one stops too (exit code 1)."""

    exit_code = EXIT_FAILED


class ToolError(BadInputError):
    """A tool cannot do what was asked (unknown experiment, damaged record, running
    experiment, bad checkpoint name); the message says what to do (exit code 2)."""


def write_error(path, exc: OSError, what: str = "write") -> WriteError:
    """A ``WriteError`` for an ``OSError`` raised while writing ``path``."""
    reason = exc.strerror or str(exc)
    return WriteError(
        f"Could not {what} {path}: {reason}; the files written before are intact. "
        "Free disk space or fix the permissions, then resume the run."
    )


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    # A KeyError's str() is the repr of its key: show the message itself, and keep the
    # quotes inside any other message ("No module named 'x'").
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    text = text.strip() or type(exc).__name__
    return text.splitlines()[0]


def report_error(exc: BaseException, os_note: str = ".") -> int:
    """Print ``exc`` on stderr and return the exit code it maps to.

    Only the project's own errors (``ExptrainError``) are bad input, a write failure or a
    divergence with their own codes; an ``OSError`` that no owner wrapped is the machine's
    (a file that vanished, a permission), exit code 1 with its message followed by
    ``os_note``. Anything else is a bug, here or in a plug-in: exit code 1 and one line that
    says so, with the traceback when ``$EXPTRAIN_DEBUG`` is set.
    """
    if isinstance(exc, ExptrainError):
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"Error: {exc.strerror or exc}{where}{os_note}", file=sys.stderr)
        return EXIT_FAILED
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(
            f"Error: unexpected error (a bug): {type(exc).__name__}: {one_line(exc)} (the traceback is above; "
            "please report it with the command you ran).",
            file=sys.stderr,
        )
    else:
        print(
            f"Error: unexpected error (a bug): {type(exc).__name__}: {one_line(exc)} "
            f"(set {DEBUG_ENV}=1 for the traceback).",
            file=sys.stderr,
        )
    return EXIT_FAILED
