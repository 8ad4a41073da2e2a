"""Helpers shared by the benchmark scripts: data location, timing, tables."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATA = Path(os.environ.get("EXPTRAIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_root(argument: str | None) -> Path:
    root = Path(argument) if argument else DEFAULT_DATA
    if not (root / "FashionMNIST" / "raw").is_dir():
        sys.exit(f"Fashion-MNIST not found under {root}; pass --data-dir pointing at a folder with FashionMNIST/raw.")
    return root


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(headers: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


class QuietOutput:
    """Send stdout and stderr (progress bars, per-epoch lines) to /dev/null while timing;
    every contender writes its usual output, nobody has to wait for a terminal."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [os.dup(1), os.dup(2)]
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)
        os.dup2(self._null, 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in (*self._saved, self._null):
            os.close(fd)


def summary(times: Dict[str, List[float]]) -> Dict[str, float]:
    return {name: median(values) for name, values in times.items()}


class Measure:
    """Wall time, this process's CPU time (user + system, all threads) and, where ``perf``
    can count them, the instructions it retires, over a ``with`` block. CPU time and
    instructions move less than wall time when other processes share the cores."""

    _perf_works = None

    def __enter__(self):
        import subprocess
        import time

        self._perf = None
        if self.perf_available():
            self._perf = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "instructions", "-p", str(os.getpid())],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.05)  # let perf attach
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        import signal
        import time

        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.instructions = None
        if self._perf is not None:
            self._perf.send_signal(signal.SIGINT)
            self.instructions = _perf_count(self._perf.communicate(timeout=10)[1])

    @classmethod
    def perf_available(cls) -> bool:
        """True when ``perf stat`` can count instructions here (often not in a VM)."""
        if cls._perf_works is None:
            import shutil
            import subprocess

            cls._perf_works = False
            if shutil.which("perf"):
                try:
                    probe = subprocess.run(
                        ["perf", "stat", "-x,", "-e", "instructions", "true"],
                        capture_output=True,
                        text=True,
                        timeout=10,
                    )
                    cls._perf_works = _perf_count(probe.stderr) is not None
                except (OSError, subprocess.SubprocessError):
                    pass
        return cls._perf_works


def _perf_count(output: str):
    for line in output.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "instructions" and fields[0].strip().isdigit():
            return int(fields[0])
    return None
