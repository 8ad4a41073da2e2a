"""Issue 7, files and numbers: divergence (2), full disks outside the checkpoint writer (5),
lost checkpoints (6), manifest claims (7), wrong-shape JSON and misplaced directories (8),
bad locations (9) and schedule extension (13).

Most runs call ``train.main`` in-process (a tiny model trains in a fraction of a second,
where a subprocess spends seconds importing torch); the divergence test also runs
``train.py`` as a real process. A full disk is a real, small tmpfs mounted as the runs
directory; where mounting is not allowed, ENOSPC is injected into the one write path
(``src.utils.io._write_all``) instead, so the test still runs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import src.utils.io as io_module
import train
from src.training.checkpoint import CheckpointManager
from tests.helpers import Result, load_checkpoint, run_cli
from tests.helpers import assert_same_final_state

TINY = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=64",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[16]",
    "--quiet",
)
SMALL = (
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=64",
    "--model",
    "mlp",
    "--model-option",
    "hidden_sizes=[2]",
    "--quiet",
)  # ~40 KB checkpoints, for the small disk
PAGE = 4096


def assert_one_line_error(result: Result, code: int) -> str:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _no_constants(name):
    raise ValueError(f"non-finite constant {name} in strict JSON")


def strict_json(text: str):
    return json.loads(text, parse_constant=_no_constants)


def log_records(experiment: Path):
    return [strict_json(line) for line in (experiment / "training_log.jsonl").read_text().splitlines()]


def tree_hashes(directory: Path):
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def non_finite_entries(value, where=""):
    """Every NaN/inf float or floating tensor anywhere inside a checkpoint payload."""
    if torch.is_tensor(value):
        return [where] if value.is_floating_point() and not bool(torch.isfinite(value).all()) else []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in non_finite_entries(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in non_finite_entries(v, f"{where}[{i}]")]
    return []


def assert_checkpoints_valid_and_finite(checkpoints: Path):
    manager = CheckpointManager(checkpoints, read_only=True)
    for path in sorted(checkpoints.glob("*.pt")):
        ok, reason, _ = manager.verify(path)
        assert ok, f"{path.name}: {reason}"
        assert not non_finite_entries(load_checkpoint(path)), f"{path.name} holds non-finite values"


# -- 2: divergence ---------------------------------------------------------------------

DIVERGES_AFTER_ONE_EPOCH = (*TINY, "--batch-size", "16", "--lr", "1e4", "--save-frequency", "1", "--epochs", "4")


def test_divergence_after_good_epochs_stops_with_code_3_and_keeps_the_good_checkpoints(tmp_path, cli):
    # A real process: exit code and stderr exactly as a user sees them.
    result = run_cli(*DIVERGES_AFTER_ONE_EPOCH, cwd=tmp_path, check=False)
    line = assert_one_line_error(Result(result.returncode, result.stdout, result.stderr), 3)
    found = re.search(r"loss is (nan|inf|-inf) in epoch (\d+) \(by step (\d+)\)", line)
    assert found, line
    bad_epoch = int(found.group(2))
    assert bad_epoch >= 2, f"this configuration must diverge after a good epoch: {line}"
    assert f"the last good checkpoint (epoch {bad_epoch - 1}) is kept" in line and "--fork exp1" in line
    experiment = tmp_path / "runs" / "exp1"
    status = strict_json((experiment / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"] == "non-finite loss"
    assert status["epoch"] == bad_epoch - 1
    checkpoints = experiment / "checkpoints"
    assert_checkpoints_valid_and_finite(checkpoints)
    assert load_checkpoint(checkpoints / "latest_checkpoint.pt")["epoch"] == bad_epoch - 1
    assert sorted(p.name for p in checkpoints.glob("epoch_*.pt")) == [f"epoch_{e}.pt" for e in range(1, bad_epoch)]
    records = log_records(experiment)  # strict: a bare NaN would raise
    assert [r["epoch"] for r in records] == list(range(1, bad_epoch))
    parent = tree_hashes(experiment)

    # The good checkpoints are a usable starting point.
    forked = cli("--fork", "exp1", "--lr", "1e-3")
    assert forked.returncode == 0, forked
    assert f"Forked exp1 (epoch {bad_epoch - 1}" in forked.stdout
    child = tmp_path / "runs" / "exp2"
    assert [r["epoch"] for r in log_records(child)] == [1, 2, 3, 4]
    assert [r["learning_rate"] for r in log_records(child)][bad_epoch - 1 :] == [1e-3] * (5 - bad_epoch)
    assert_checkpoints_valid_and_finite(child / "checkpoints")
    assert tree_hashes(experiment) == parent, "the fork leaves the diverged parent as it was"

    # Resuming diverges again; the damaged status.json it rewrites as failed is reported.
    (experiment / "status.json").write_text("[1, 2]")
    again = cli("--resume", "exp1")
    assert_one_line_error(again, 3)
    assert "status.json holds a JSON list" in again.stdout and "rewritten" in again.stdout
    status = strict_json((experiment / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"] == "non-finite loss"
    assert_checkpoints_valid_and_finite(checkpoints)


def test_divergence_in_the_first_epoch_saves_nothing(tmp_path, cli):
    result = cli(*TINY, "--lr", "1e30", "--epochs", "3", "--save-frequency", "1")
    line = assert_one_line_error(result, 3)
    assert re.search(r"loss is (nan|inf) in epoch 1 \(by step \d+\)", line) and "nothing to keep" in line
    experiment = tmp_path / "runs" / "exp1"
    status = strict_json((experiment / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"] == "non-finite loss" and status["epoch"] == 0
    assert not list((experiment / "checkpoints").glob("*")), "nothing non-finite is saved"
    log = experiment / "training_log.jsonl"
    assert not log.exists() or log_records(experiment) == []


@pytest.mark.parametrize(
    "args",
    [
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--lr=-inf",),
        ("--lr", "1e400"),
        ("--grad-clip", "nan"),
        ("--weight-decay", "inf"),
        ("--checkpoint-interval", "nan"),
        ("--dataset-option", "noise=NaN"),
        ("--dataset-option", "noise=Infinity"),
        ("--dataset-option", "noise=-Infinity"),
        ("--dataset-option", "noise=1e999"),
        ("--model-option", "dropout=NaN"),
        ("--model-option", "hidden_sizes=[16, NaN]"),
    ],
    ids=lambda a: "_".join(a),
)
def test_non_finite_option_values_are_bad_input(tmp_path, cli, args):
    result = cli(*TINY, "--epochs", "1", *args)
    line = assert_one_line_error(result, 2)
    assert "finite" in line, line
    assert "Data:" not in result.stdout, "refused before any data is loaded"
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir()), "no runs/expN left"


def test_non_finite_override_on_a_fork_is_bad_input(tmp_path, cli):
    assert cli(*TINY, "--epochs", "1").returncode == 0
    before = tree_hashes(tmp_path / "runs" / "exp1")
    for args in (("--lr", "nan"), ("--model-option", "dropout=NaN")):
        assert_one_line_error(cli("--fork", "exp1", "--epochs", "2", *args), 2)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp1"]
    assert tree_hashes(tmp_path / "runs" / "exp1") == before


# -- 5: a full disk outside the checkpoint writer ---------------------------------------


class SmallDisk:
    """The runs directory on a tiny tmpfs that fills up (another process writing) just
    before the N-th write of a run, leaving one page less than that write needs; or,
    where mounting is not allowed, a byte budget enforced in ``_write_all`` (ENOSPC)."""

    def __init__(self, root: Path, real: bool):
        self.root, self.real = root, real
        self.runs = root / "runs"
        self.filler = root / "filler"
        self.budget = None  # fallback: bytes the writes may still use
        self.fill_before = None  # index of the write that finds the disk full
        self.count = 0
        self.sizes = []  # bytes of every write since ``arm``

    def free(self) -> int:
        if self.real:
            stat = os.statvfs(self.root)
            return stat.f_bavail * stat.f_frsize
        return self.budget if self.budget is not None else 1 << 40

    def arm(self, index=None) -> None:
        """Count writes from now; fill the disk just before write ``index`` (None: never)."""
        self.fill_before, self.count, self.sizes = index, 0, []

    def _fill_for(self, size: int) -> None:
        if self.real:  # a page less than the write needs: bigger writes leave room for the status
            leave = max(0, -(-size // PAGE) - 1) * PAGE
            with open(self.filler, "wb") as handle:
                handle.write(b"\0" * max(0, self.free() - leave))
        else:
            self.budget = size - 1

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.budget, self.fill_before = None, None

    def write_all(self, real_write):
        def write(fd, data):
            if self.count == self.fill_before:
                self._fill_for(len(data))
            self.count += 1
            self.sizes.append(len(data))
            if self.budget is not None:
                if len(data) > self.budget:
                    real_write(fd, bytes(data[: self.budget]))
                    self.budget = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.budget -= len(data)
            real_write(fd, data)

        return write


def _mount(args, target: Path) -> bool:
    try:
        return subprocess.run(["mount", *args, str(target)], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unmount(target: Path) -> None:
    from src.layout import HELD_LOCKS

    for key in [k for k in HELD_LOCKS if k.startswith(os.path.realpath(target))]:
        HELD_LOCKS.pop(key).close()
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    root = tmp_path / "disk"
    root.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", "size=2m", "tmpfs"], root)
    disk = SmallDisk(root, real=mounted)
    monkeypatch.setattr(io_module, "_write_all", disk.write_all(io_module._write_all))
    try:
        disk.runs.mkdir()
        yield disk
    finally:
        disk.unfill()
        if mounted:
            _unmount(root)


def _kind(error: str) -> str:
    for needle, kind in (
        ("create a new experiment", "create"),
        ("create the runs directory", "create"),
        ("the status", "status"),
        ("save checkpoint", "checkpoint"),
        ("training log", "log"),
        ("training curves", "curves"),
        ("the configuration", "config"),
        ("Could not lock", "lock"),
    ):
        if needle in error:
            return kind
    return error


def _reset(disk: SmallDisk, template: Path = None) -> None:
    shutil.rmtree(disk.runs)
    if template is not None:
        shutil.copytree(template, disk.runs)
    else:
        disk.runs.mkdir()


def _assert_nothing_damaged(disk: SmallDisk, result: Result, index: int) -> None:
    """What a failed run leaves: one line, no staging or temporary files, every visible
    experiment complete with its config, valid checkpoints and a strict log, and a status
    that is not stuck at running when it could have been written."""
    assert result.returncode == 1, (index, result)
    line = assert_one_line_error(result, 1)
    assert line.startswith("Error: Could not") and "No space left on device" in line, (index, line)
    leftovers = [p for p in disk.runs.rglob("*") if p.name.startswith(".new-exp") or ".tmp-" in p.name]
    assert not leftovers, (index, leftovers)
    for experiment in disk.runs.iterdir():
        assert re.fullmatch(r"exp\d+", experiment.name), (index, experiment)
        assert isinstance(strict_json((experiment / "config.json").read_text()), dict), (index, "config")
        assert_checkpoints_valid_and_finite(experiment / "checkpoints")
        if (experiment / "training_log.jsonl").exists():
            epochs = [r["epoch"] for r in log_records(experiment)]
            assert epochs == list(range(1, len(epochs) + 1)), (index, epochs)
        if (experiment / "status.json").exists():
            status = strict_json((experiment / "status.json").read_text())
            could_write = disk.free() >= (PAGE if disk.real else 1024)
            assert status["state"] != "running" or not could_write, (index, result.stderr, status)


def _sweep(disk: SmallDisk, cli, args, template=None, limit=None):
    """Run ``args`` once to count its writes, then once per write with the disk filling
    up just before it; yields (index, result) with the disk freed again."""
    _reset(disk, template)
    disk.arm()
    assert cli(*args).returncode == 0
    count = len(disk.sizes)
    for index in range(count if limit is None else min(limit, count)):
        _reset(disk, template)
        disk.arm(index)
        result = cli(*args)
        _assert_nothing_damaged(disk, result, index)
        disk.unfill()
        yield index, result


def test_full_disk_at_every_write_of_a_run_is_one_line_and_resumable(cli, small_disk):
    disk, runs = small_disk, str(small_disk.runs)
    args = (*SMALL, "--epochs", "2", "--save-frequency", "1", "--runs-dir", runs)
    kinds = set()
    for index, result in _sweep(disk, cli, args):
        kinds.add(_kind(result.stderr))
        experiments = sorted(p.name for p in disk.runs.iterdir())
        if not experiments:
            assert _kind(result.stderr) == "create", (index, result.stderr)
            continue
        assert experiments == ["exp1"], (index, experiments)
        resumed = cli("--resume", "exp1", "--runs-dir", runs)
        assert resumed.returncode == 0, (index, result.stderr, resumed)
        experiment = disk.runs / "exp1"
        assert strict_json((experiment / "status.json").read_text())["state"] == "completed", (index, resumed.stdout)
        assert [r["epoch"] for r in log_records(experiment)] == [1, 2], (index, resumed.stdout)
        _, payload, problems = CheckpointManager(experiment / "checkpoints", read_only=True).find_latest_valid()
        assert payload["epoch"] == 2 and not problems, (index, problems)
        assert (experiment / "training_curves.png").stat().st_size > 0
    assert {"create", "status", "checkpoint", "log", "curves"} <= kinds, kinds


def test_full_disk_while_forking_or_resuming_leaves_nothing_half_made(tmp_path, cli, small_disk):
    disk, runs = small_disk, str(small_disk.runs)
    template = tmp_path / "template"
    assert cli(*SMALL, "--epochs", "1", "--save-frequency", "1", "--runs-dir", template).returncode == 0
    parent = tree_hashes(template / "exp1")

    # Fork: config.json and lineage.json are written in staging, then renamed; then the
    # status and the first checkpoint. Every failure ends where an unbroken fork ends.
    fork = ("--fork", "exp1", "--epochs", "2", "--lr", "5e-4", "--runs-dir", runs)
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    assert cli(*fork[:-1], reference).returncode == 0
    kinds = set()
    for index, result in _sweep(disk, cli, fork, template, limit=5):
        kinds.add(_kind(result.stderr))
        assert tree_hashes(disk.runs / "exp1") == parent, "the parent is never touched"
        if _kind(result.stderr) == "create":
            assert sorted(p.name for p in disk.runs.iterdir()) == ["exp1"], "no half-made fork is visible"
            assert cli(*fork).returncode == 0 and (disk.runs / "exp2" / "lineage.json").is_file()
        else:
            assert cli("--resume", "exp2", "--runs-dir", runs).returncode == 0
        assert strict_json((disk.runs / "exp2" / "status.json").read_text())["state"] == "completed"
        assert_same_final_state(disk.runs / "exp2", reference / "exp2")
        assert strict_json((disk.runs / "exp2" / "lineage.json").read_text())["parent"] == "exp1"
    assert {"create", "status", "checkpoint"} <= kinds, kinds

    # Resume: config.json is rewritten, then the status, before the first epoch.
    resume = ("--resume", "exp1", "--epochs", "2", "--runs-dir", runs)
    kinds = set()
    for index, result in _sweep(disk, cli, resume, template, limit=3):
        kinds.add(_kind(result.stderr))
        assert strict_json((disk.runs / "exp1" / "config.json").read_text())["epochs"] in (1, 2)
        again = cli(*resume)
        assert again.returncode == 0, (index, result.stderr, again)
        assert [r["epoch"] for r in log_records(disk.runs / "exp1")] == [1, 2]
        assert strict_json((disk.runs / "exp1" / "status.json").read_text())["state"] == "completed"
    assert {"config", "status"} <= kinds, kinds


def test_fork_that_saved_no_checkpoint_restarts_from_its_parent(tmp_path, cli):
    """A fork stopped before its first save (disk full, killed) has only config.json and
    lineage.json: resuming it starts again from the recorded parent checkpoint, never from
    scratch; once the parent has moved on, it is refused with guidance to fork again."""
    assert cli(*TINY, "--epochs", "1", "--save-frequency", "1").returncode == 0
    assert cli("--fork", "exp1", "--epochs", "3", "--lr", "5e-4").returncode == 0  # exp2: the reference
    shutil.copytree(tmp_path / "runs" / "exp2", tmp_path / "runs" / "exp3")
    unsaved = tmp_path / "runs" / "exp3"
    for path in list(unsaved.rglob("*")):
        if path.is_file() and path.name not in ("config.json", "lineage.json"):
            path.unlink()
    result = cli("--resume", "exp3")
    assert result.returncode == 0, result
    assert "exp3 is a fork of exp1 that saved no checkpoint of its own" in result.stdout
    assert "Epoch 2/3" in result.stdout and "Epoch 1/3" not in result.stdout, "it continues from the parent's epoch"
    assert_same_final_state(unsaved, tmp_path / "runs" / "exp2")
    assert [r["learning_rate"] for r in log_records(unsaved)] == [1e-3, 5e-4, 5e-4]

    shutil.copytree(unsaved, tmp_path / "runs" / "exp4")
    for path in list((tmp_path / "runs" / "exp4").rglob("*")):
        if path.is_file() and path.name not in ("config.json", "lineage.json"):
            path.unlink()
    assert cli("--resume", "exp1", "--epochs", "2").returncode == 0  # the parent moves on
    before = tree_hashes(tmp_path / "runs" / "exp4")
    line = assert_one_line_error(cli("--resume", "exp4"), 2)
    assert "no longer exp1's newest" in line and "--fork exp1" in line
    assert tree_hashes(tmp_path / "runs" / "exp4") == before


# -- 6: resume after the checkpoints are gone --------------------------------------------


@pytest.mark.parametrize(
    "removed", ["pt files", "pt files and manifests", "checkpoints dir", "pt files and log", "a fork's pt files"]
)
def test_resume_without_checkpoints_is_refused_and_changes_nothing(tmp_path, cli, removed):
    name, epochs = "exp1", 2
    if removed.startswith("a fork"):  # a fork's own progress is not replaced by a restart from its parent
        assert cli(*TINY, "--epochs", "1", "--save-frequency", "1").returncode == 0
        name = "exp2"
        assert cli("--fork", "exp1", "--epochs", "2").returncode == 0
    else:
        assert cli(*TINY, "--epochs", "2", "--save-frequency", "1").returncode == 0
    experiment = tmp_path / "runs" / name
    checkpoints = experiment / "checkpoints"
    if removed == "checkpoints dir":
        shutil.rmtree(checkpoints)
    else:
        for path in checkpoints.glob("*.pt" if "manifests" not in removed else "*"):
            path.unlink()
    if removed.endswith("log"):
        (experiment / "training_log.jsonl").unlink()
    before = tree_hashes(experiment)
    for extra in ((), ("--epochs", "4")):
        result = cli("--resume", name, *extra)
        line = assert_one_line_error(result, 2)
        where = "status.json" if removed.endswith("log") else "training_log.jsonl"
        assert f"records {epochs} finished epoch(s) in {where} but no checkpoint holds them" in line, line
        assert "checkpoints has none" in line and "nothing was changed" in line
        assert tree_hashes(experiment) == before, "log, curves and status are not overwritten"
    assert checkpoints.exists() == (removed != "checkpoints dir"), "nothing is recreated"


# -- 7: a manifest's claims are checked against the payload -----------------------------


@pytest.mark.parametrize(
    "target,claim,newest",
    [
        ("epoch_1.pt", {"epoch": 99}, True),
        ("epoch_2.pt", {"epoch": 3, "step": 99}, True),
        ("latest_checkpoint.pt", {"epoch": 99}, True),
        ("latest_checkpoint.pt", {"epoch": 1, "step": 1}, False),  # an older claim: passed over, never used
    ],
)
def test_manifest_claim_that_disagrees_with_the_payload_is_damage(tmp_path, cli, target, claim, newest):
    assert cli(*TINY, "--epochs", "3", "--save-frequency", "1").returncode == 0
    checkpoints = tmp_path / "runs" / "exp1" / "checkpoints"
    manifest = checkpoints / f"{target}.manifest.json"
    data = json.loads(manifest.read_text())
    for entry in data["entries"]:
        entry.update(claim)  # sha256 and size still match the file
    manifest.write_text(json.dumps(data))
    kept = {name: (checkpoints / name).read_bytes() for name in ("epoch_2.pt", "epoch_3.pt", "best_model.pt")}
    result = cli("--resume", "exp1", "--epochs", "4")
    assert result.returncode == 0, result
    if newest:  # the false claim is the newest, so the file is examined and reported
        assert f"skipping damaged checkpoint exp1/checkpoints/{target}: Checkpoint" in result.stdout
        assert f"manifest claims epoch {claim['epoch']}" in result.stdout
    used = "epoch_3.pt" if target == "latest_checkpoint.pt" else "latest_checkpoint.pt"
    assert f"Resuming exp1 from {used} at epoch 3" in result.stdout
    assert "Epoch 4/4" in result.stdout and "Epoch 3/4" not in result.stdout
    assert {name: (checkpoints / name).read_bytes() for name in kept} == kept, "nothing newer was overwritten"
    assert [r["epoch"] for r in log_records(tmp_path / "runs" / "exp1")] == [1, 2, 3, 4]


def test_every_manifest_claiming_a_future_epoch_is_one_clear_error(tmp_path, cli):
    assert cli(*TINY, "--epochs", "2", "--save-frequency", "1").returncode == 0
    experiment = tmp_path / "runs" / "exp1"
    for manifest in (experiment / "checkpoints").glob("*.manifest.json"):
        data = json.loads(manifest.read_text())
        for entry in data["entries"]:
            entry["epoch"] = 99
        manifest.write_text(json.dumps(data))
    before = tree_hashes(experiment)
    line = assert_one_line_error(cli("--resume", "exp1", "--epochs", "3"), 2)
    assert "has no valid checkpoint" in line and "manifest claims epoch 99" in line
    assert tree_hashes(experiment) == before


def test_best_model_accuracy_claim_the_file_does_not_back_never_blocks_a_better_best(tmp_path, cli):
    """best_model.pt's manifest claims its accuracy; a claim higher than the restored state's
    best is believed only when the file verifies and holds it, else a later, better epoch
    could never replace a forged or damaged best_model.pt."""
    args = ("--dataset", "mnist-sample", "--model", "mlp", "--quiet", "--no-augment", "--save-frequency", "1")
    assert cli(*args, "--epochs", "1").returncode == 0
    checkpoints = tmp_path / "runs" / "exp1" / "checkpoints"
    best = checkpoints / "best_model.pt"
    manifest = checkpoints / "best_model.pt.manifest.json"
    data = json.loads(manifest.read_text())
    for entry in data["entries"]:
        entry["accuracy"] = 100.0  # sha256, size, epoch and step still match the file
    manifest.write_text(json.dumps(data))
    result = cli("--resume", "exp1", "--epochs", "3")
    assert result.returncode == 0, result
    accuracies = [r["val_accuracy"] for r in log_records(tmp_path / "runs" / "exp1")]
    assert max(accuracies[1:]) > accuracies[0], "the scenario needs a later, better epoch"
    state = load_checkpoint(best)
    assert state["epoch"] == 1 + accuracies[1:].index(max(accuracies[1:])) + 1
    assert CheckpointManager(checkpoints, read_only=True).verify(best)[0]


# -- 8: valid JSON of the wrong shape, directories where files belong --------------------

SHAPES = {
    "list": "[1, 2]",
    "null": "null",
    "string": '"hello"',
    "epochs_text": '{"epochs": "ten"}',
    "text_for_number": '{"epoch": "2", "step": "x", "state": 5, "entries": [{"sha256": 1}]}',
    "nan": '{"epoch": NaN, "lr": NaN, "state": NaN}',
    "empty": "",
    "directory": None,
}


@pytest.fixture(scope="module")
def shaped_template(tmp_path_factory):
    """exp1 (2 epochs, epoch files) and its fork exp2 (3 epochs, with lineage.json)."""
    root = tmp_path_factory.mktemp("shapes")
    for args in ((*TINY, "--epochs", "2", "--save-frequency", "1"), ("--fork", "exp1", "--epochs", "3", "--quiet")):
        assert train.main([*args, "--runs-dir", str(root / "runs")]) == 0
    return root / "runs"


def _damage(path: Path, shape: str, log_line: bool = False) -> None:
    if SHAPES[shape] is None:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir()
    elif log_line:
        lines = path.read_text().splitlines()
        lines[1] = SHAPES[shape] or "{}"
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(SHAPES[shape])


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(
    "target",
    [
        "config.json",
        "status.json",
        "lineage.json",
        "checkpoints/latest_checkpoint.pt.manifest.json",
        "training_log.jsonl",
    ],
)
def test_wrong_shape_file_is_a_warning_or_one_clear_error(tmp_path, cli, shaped_template, target, shape):
    runs = tmp_path / "runs"
    shutil.copytree(shaped_template, runs)
    experiment = runs / "exp2"
    path = experiment / target
    _damage(path, shape, log_line=target == "training_log.jsonl")
    untouched = {p: h for p, h in tree_hashes(experiment).items() if not p.startswith(target)}
    parent = tree_hashes(runs / "exp1")
    result = cli("--resume", "exp2", "--epochs", "4")
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    assert tree_hashes(runs / "exp1") == parent
    if target == "config.json" or SHAPES[shape] is None and target != "lineage.json":
        line = assert_one_line_error(result, 2)
        assert target.split("/")[-1] in line, line
        assert {p: h for p, h in tree_hashes(experiment).items() if not p.startswith(target)} == untouched
        if target == "config.json":  # a fork of it is refused the same way
            assert target in assert_one_line_error(cli("--fork", "exp2", "--epochs", "4"), 2)
        return
    assert result.returncode == 0, result
    if target == "status.json":
        assert "status.json" in result.stdout and "rewritten" in result.stdout, result.stdout
    elif target.endswith("manifest.json"):
        assert "skipping damaged checkpoint exp2/checkpoints/latest_checkpoint.pt" in result.stdout
        assert "using epoch_3.pt (epoch 3" in result.stdout
    elif target == "training_log.jsonl":
        assert "training_log.jsonl" in result.stdout and "Warning" in result.stdout, result.stdout
        assert (experiment / "training_log.jsonl.damaged").is_file()
    assert strict_json((experiment / "status.json").read_text())["state"] == "completed"
    assert [r["epoch"] for r in log_records(experiment)] == [1, 2, 3, 4]
    assert_checkpoints_valid_and_finite(experiment / "checkpoints")


@pytest.mark.parametrize(
    "target",
    [
        "training_curves.png",
        ".lock",
        "checkpoints/best_model.pt",
        "checkpoints/latest_checkpoint.pt",
        "checkpoints/epoch_3.pt.manifest.json",
    ],
)
def test_directory_where_a_run_file_belongs_is_refused_before_training(tmp_path, cli, shaped_template, target):
    runs = tmp_path / "runs"
    shutil.copytree(shaped_template, runs)
    experiment = runs / "exp2"
    _damage(experiment / target, "directory")
    before = tree_hashes(experiment)
    result = cli("--resume", "exp2", "--epochs", "4")
    line = assert_one_line_error(result, 2)
    assert f"{target} is a directory" in line, line
    assert "Epoch 4/4" not in result.stdout, "refused before training"
    assert tree_hashes(experiment) == before


def test_file_where_checkpoints_belong_is_one_clear_error(tmp_path, cli, shaped_template):
    runs = tmp_path / "runs"
    shutil.copytree(shaped_template, runs)
    shutil.rmtree(runs / "exp2" / "checkpoints")
    (runs / "exp2" / "checkpoints").write_text("not a directory")
    before = tree_hashes(runs)
    for args in (("--resume", "exp2", "--epochs", "4"), ("--fork", "exp2", "--epochs", "4")):
        line = assert_one_line_error(cli(*args), 2)
        assert "exp2/checkpoints is a file, not a directory" in line, line
    assert tree_hashes(runs) == before and sorted(p.name for p in runs.iterdir()) == ["exp1", "exp2"]


@pytest.mark.parametrize(
    "record",
    [
        '{"epoch": Infinity, "train_loss": 1, "train_accuracy": 1, "val_loss": 1, "val_accuracy": 1, "learning_rate": 1, "epoch_time": 1}',
        '{"epoch": 2.5, "train_loss": 1, "train_accuracy": 1, "val_loss": 1, "val_accuracy": 1, "learning_rate": 1, "epoch_time": 1}',
        '{"epoch": 2, "train_loss": NaN, "train_accuracy": 1, "val_loss": 1, "val_accuracy": 1, "learning_rate": 1, "epoch_time": 1}',
    ],
    ids=["epoch_infinity", "epoch_fraction", "loss_nan"],
)
def test_log_line_with_non_finite_or_fractional_numbers_is_damage(tmp_path, cli, shaped_template, record):
    runs = tmp_path / "runs"
    shutil.copytree(shaped_template, runs)
    log = runs / "exp2" / "training_log.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = record
    log.write_text("\n".join(lines) + "\n")
    result = cli("--resume", "exp2", "--epochs", "4")
    assert result.returncode == 0, result
    assert "Line 2 of" in result.stdout and "not a valid history record" in result.stdout
    assert [r["epoch"] for r in log_records(runs / "exp2")] == [1, 2, 3, 4]


def test_stale_staging_directory_with_an_impossible_pid_does_not_block_new_runs(tmp_path, cli):
    stale = tmp_path / "runs" / ".new-exp.tmp-99999999999999999999999-abcdef12"
    stale.mkdir(parents=True)
    result = cli(*TINY, "--epochs", "1")
    assert result.returncode == 0, result
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp1"]


# -- 9: bad locations ---------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory nobody may write to: a read-only tmpfs, else a mode the user cannot
    bypass, else (root without mount) a read-only verdict from os.access."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"], target)
    if not mounted:
        if os.geteuid() != 0:
            target.chmod(0o555)
        else:
            real_access = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, mode, *a, **k: (
                    False if Path(p).resolve() == target.resolve() and mode & os.W_OK else real_access(p, mode, *a, **k)
                ),
            )
    try:
        yield target
    finally:
        if mounted:
            _unmount(target)
        else:
            target.chmod(0o755)


def test_runs_dir_that_cannot_hold_experiments_is_refused_before_loading_data(tmp_path, cli, read_only_dir):
    (tmp_path / "afile").write_text("x")
    os.symlink(tmp_path / "nowhere" / "dir", tmp_path / "dangling")
    os.symlink("loop", tmp_path / "loop")
    cases = {
        "afile": "is a file, not a directory",
        "afile/x": "afile is a file",
        "afile/x/y": "afile is a file",
        "ro": "is not writable",
        "ro/sub": "is not writable",
        "dangling": "broken symbolic link",
        "dangling/x": "broken symbolic link",
        "loop/x": "broken symbolic link",
        "x" * 300: "File name too long",
    }
    for runs_dir, message in cases.items():
        for extra in ((), ("--resume", "exp1"), ("--fork", "exp1")):
            result = cli(*TINY, "--epochs", "1", "--runs-dir", runs_dir, *extra)
            line = assert_one_line_error(result, 2)
            if not extra:
                assert message in line, (runs_dir, line)
            assert "Data:" not in result.stdout, (runs_dir, "refused before any data is loaded")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "afile",
        "dangling",
        "loop",
        "ro",
    ], "nothing was created"


def test_data_dir_that_is_a_file_is_refused_before_loading_data(tmp_path, cli, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for dataset in ("mnist", "fashion_mnist"):
        for data_dir, message in (("afile", "afile (from --data-dir) is a file"), ("afile/x", "lies inside afile")):
            result = cli("--dataset", dataset, "--model", "mlp", "--quiet", "--epochs", "1", "--data-dir", data_dir)
            line = assert_one_line_error(result, 2)
            assert message in line, line
            assert "Data:" not in result.stdout
    monkeypatch.setenv("EXPTRAIN_DATA_DIR", str(tmp_path / "afile"))
    line = assert_one_line_error(cli("--dataset", "mnist", "--model", "mlp", "--quiet"), 2)
    assert "from $EXPTRAIN_DATA_DIR) is a file" in line
    assert not (tmp_path / "runs").exists()


# -- 13: extending a finished schedule ---------------------------------------------------


def _learning_rates(experiment: Path):
    return [r["learning_rate"] for r in log_records(experiment)]


@pytest.mark.parametrize("scheduler,extended", [("cosine", [1e-3, 5e-4]), ("step", [1e-3, 1e-4])])
def test_finished_schedule_is_refused_on_resume_and_replanned_by_fork(tmp_path, cli, scheduler, extended):
    epochs = 2 if scheduler == "cosine" else 3
    assert cli(*TINY, "--scheduler", scheduler, "--epochs", epochs).returncode == 0
    experiment = tmp_path / "runs" / "exp1"
    before = tree_hashes(experiment)
    line = assert_one_line_error(cli("--resume", "exp1", "--epochs", 2 * epochs), 2)
    assert f"planned for {epochs} epochs" in line and f"--fork exp1 --epochs {2 * epochs}" in line
    assert tree_hashes(experiment) == before

    assert cli("--fork", "exp1", "--epochs", 2 * epochs).returncode == 0
    rates = _learning_rates(tmp_path / "runs" / "exp2")
    assert rates[:epochs] == _learning_rates(experiment)
    assert rates[epochs : epochs + 2] == pytest.approx(extended), rates
    assert all(rate > 0 for rate in rates) and rates[epochs] > rates[epochs - 1], "a new plan from the lr, never lr 0"
    if scheduler == "cosine":  # cosine over the 2 new epochs: lr * (1 + cos(pi * t / 2)) / 2
        assert rates[2:] == pytest.approx([1e-3 * (1 + math.cos(math.pi * t / 2)) / 2 for t in range(2)])
    forked = cli("--fork", "exp1", "--epochs", 2 * epochs, "--lr", "0.01")
    assert forked.returncode == 0
    assert _learning_rates(tmp_path / "runs" / "exp3")[epochs : epochs + 2] == pytest.approx([10 * r for r in extended])


def test_finished_onecycle_is_replanned_by_fork_over_the_steps_left(tmp_path, cli):
    """A one-cycle plan cannot be extended on resume; a fork plans a new cycle over exactly
    its remaining optimizer steps, starting at lr/25 (OneCycleLR's start) of the fork's lr."""
    assert cli(*TINY, "--scheduler", "onecycle", "--epochs", 2, "--batch-size", 8).returncode == 0
    experiment = tmp_path / "runs" / "exp1"
    line = assert_one_line_error(cli("--resume", "exp1", "--epochs", 4), 2)
    assert "--fork exp1 --epochs 4" in line
    for name, extra, lr in (("exp2", (), 1e-3), ("exp3", ("--lr", "0.01"), 0.01)):
        forked = cli("--fork", "exp1", "--epochs", 4, *extra)
        assert forked.returncode == 0, forked.stdout + forked.stderr
        rates = _learning_rates(tmp_path / "runs" / name)
        assert len(rates) == 4 and rates[:2] == _learning_rates(experiment)
        assert rates[2] == pytest.approx(lr / 25) and rates[3] > rates[2], rates
        assert json.loads((tmp_path / "runs" / name / "status.json").read_text())["state"] == "completed"


def test_cosine_run_shortened_on_resume_can_be_extended_back_to_its_plan(tmp_path, cli):
    # Early stopping ends a 4-epoch cosine plan at epoch 2 (no gain at lr 1e-12); a resume
    # to 3 epochs keeps the 4-epoch plan, so resuming to 4 stays within it and 5 does not.
    stopped = cli(*TINY, "--scheduler", "cosine", "--epochs", "4", "--patience", "1", "--lr", "1e-12", "--no-augment")
    assert stopped.returncode == 0 and "(stopped early)" in stopped.stdout
    assert cli("--resume", "exp1", "--patience", "0", "--epochs", "3").returncode == 0
    result = cli("--resume", "exp1", "--epochs", "4")
    assert result.returncode == 0, result
    plan = [1e-12 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert _learning_rates(tmp_path / "runs" / "exp1") == pytest.approx(plan, rel=1e-9)
    line = assert_one_line_error(cli("--resume", "exp1", "--epochs", "5"), 2)
    assert "planned for 4 epochs" in line
