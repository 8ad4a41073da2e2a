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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


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
