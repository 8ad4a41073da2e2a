"""Plug-ins through train.py, as the README shows them: the example learns and a resume
re-imports it by itself; a plug-in that raises is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO_ROOT, log_records, run_cli, sha256

EXAMPLE = REPO_ROOT / "examples" / "plugin_example.py"
QUIET = ("--quiet",)


# -- end to end, as the README shows it --------------------------------------------------


@pytest.mark.slow
def test_readme_example_learns_and_resume_reimports_it_by_itself(tmp_path):
    runs = tmp_path / "runs"
    first = run_cli(
        "--import",
        "examples/plugin_example.py",
        "--model",
        "tiny_cnn",
        "--dataset",
        "stripes",
        "--epochs",
        "2",
        "--runs-dir",
        str(runs),
        *QUIET,
        cwd=REPO_ROOT,
    )
    experiment = runs / "exp1"
    assert "Model: tiny_cnn" in first.stdout and "Data: stripes" in first.stdout
    assert log_records(experiment)[-1]["val_accuracy"] > 90.0
    config = json.loads((experiment / "config.json").read_text())
    assert config["imports"] == [
        {"module": "examples/plugin_example.py", "path": str(EXAMPLE.resolve()), "sha256": sha256(EXAMPLE)}
    ]

    resumed = run_cli("--resume", "exp1", "--epochs", "3", "--runs-dir", str(runs), *QUIET, cwd=tmp_path)
    assert "Resuming exp1 from latest_checkpoint.pt at epoch 2" in resumed.stdout
    assert [r["epoch"] for r in log_records(experiment)] == [1, 2, 3]
    assert json.loads((experiment / "config.json").read_text())["imports"] == config["imports"]


def test_plugin_that_raises_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "broken.py").write_text("from src.models import ModelRegistry\n\nsettings = {}\nsettings['width']\n")
    result = run_cli("--import", "broken.py", "--model", "mine", *QUIET, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: plug-in broken.py failed to import: KeyError: 'width' (broken.py, line 4); fix it and try again "
        "(set EXPTRAIN_DEBUG=1 for the traceback)."
    )
    assert not (tmp_path / "runs").exists()
