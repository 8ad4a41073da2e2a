#!/usr/bin/env python
"""Command line: train a model in a new experiment, or resume / fork an existing one.

The specification's entry point; the code lives in ``src/cli/train.py`` (so an installed
``exptrain train`` runs the very same command without this file). ``python train.py
--help`` lists every option and the exit codes.
"""

from __future__ import annotations

import sys

from src.cli.train import OPTIONS, SPECIAL_OPTIONS, build_parser, main, parse_key_values

__all__ = ["OPTIONS", "SPECIAL_OPTIONS", "build_parser", "main", "parse_key_values"]

if __name__ == "__main__":
    sys.exit(main(exiting=True))
