"""A tiny smoke run of each benchmark script (their numbers are not checked: speed is
measured by running them, never asserted in tests)."""

from __future__ import annotations

import subprocess
import sys


from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env


def run_benchmark(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / name), *args],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_overhead_smoke(shared_data):
    out = run_benchmark("overhead.py", "--smoke", "--no-lightning", "--data-dir", str(shared_data))
    assert "| mlp" in out and "trainer/hand" in out and "trainer-sync/hand" in out
    assert "bookkeeping ms/epoch" in out and "us/step" in out


def test_data_smoke(shared_data):
    out = run_benchmark("data.py", "--smoke", "--data-dir", str(shared_data))
    assert "per-sample, 2 workers" in out and "samples/s" in out


def test_time_to_accuracy_smoke():
    out = run_benchmark("time_to_accuracy.py", "--smoke")
    assert "s to 50%" in out and "peak RSS MB" in out


def test_gpu_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(REPO_ROOT / "benchmarks" / "gpu.sh")]).returncode == 0


def test_imagefolder_smoke():
    out = run_benchmark("imagefolder.py", "--smoke")
    assert "per-sample Pillow" in out and "memory-mapped" in out


def test_snapshot_smoke():
    out = run_benchmark("snapshot.py", "--smoke")
    assert "| mlp" in out and "synchronous save ms" in out
