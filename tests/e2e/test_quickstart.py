"""The specification's Quick Start, taken from the manual's Python API page (docs/python-api.md), runs unchanged."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env


def quickstart_code() -> str:
    page = (REPO_ROOT / "docs" / "python-api.md").read_text()
    section = page.split("# Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_documented_quickstart_is_the_specification_verbatim():
    spec = REPO_ROOT.parent / "shared" / "SPEC.md"
    if spec.exists():
        spec_code = re.search(r"## Quick Start\s+```python\n(.*?)```", spec.read_text(), re.S).group(1)
        assert quickstart_code() == spec_code


def test_quickstart_runs_and_returns_every_key(tmp_path, shared_data):
    code = quickstart_code().replace("trainer.train(epochs=20)", "trainer.train(epochs=2)")
    assert "epochs=2)" in code
    code += "\nimport json\nprint('RESULTS', json.dumps({k: v for k, v in results.items() if k != 'history'}))\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
        env=cli_env(EXPTRAIN_DATA_DIR=str(shared_data)),
    )
    assert result.returncode == 0, result.stderr
    assert "Best accuracy:" in result.stdout and "Training time:" in result.stdout
    import json

    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert set(results) == {
        "epochs_trained",
        "best_accuracy",
        "training_time",
        "experiment_dir",
        "stopped_early",
        "best_epoch",
    }
    assert results["epochs_trained"] == 2 and results["best_accuracy"] > 90 and not results["stopped_early"]
    experiment = tmp_path / "runs" / "exp1"
    assert (experiment / "checkpoints" / "epoch_1.pt").exists() and (experiment / "checkpoints" / "epoch_2.pt").exists()
    assert (experiment / "training_curves.png").exists() and (experiment / "training_log.jsonl").exists()
