"""Experiments held by a live process: the tools refuse to write into a running experiment,
listing never takes a lock, concurrent creations and resumes, and a dead holder."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli import common
from src.cli.common import LockTable
from src.cli.listing import list_experiments
from src.training import ExperimentError, ExperimentManager, experiment
from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env, fabricate, row_of, run_tool
from tests.helpers import tree_hashes_with_lock as tree_hashes

_CREATE = """
import os, sys, time
from src.training import ExperimentManager
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):  # a barrier: all eight start creating together
    time.sleep(0.001)
print(ExperimentManager(sys.argv[1], lock=False).experiment_dir, flush=True)
"""


_HOLD = """
import sys, time
from src.training import ExperimentManager
ExperimentManager(sys.argv[1], resume_exp="exp1")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_table_sees_a_lock_held_by_another_process_or_this_one(tmp_path, lock_holder):
    if not LockTable().available:
        pytest.skip("no /proc/locks on this system (the recorded pid is used instead)")
    held, free = tmp_path / "held", tmp_path / "free"
    held.mkdir(), free.mkdir()
    (free / ".lock").write_text("1")
    holder = lock_holder(held)
    assert LockTable().held(held / ".lock") is True and LockTable().held(free / ".lock") is False
    assert LockTable().held(tmp_path / ".lock") is None, "no lock file: unknown, the recorded pid decides"
    assert common.lock_holder(held) == str(holder.pid) and common.lock_holder(free) is None
    assert experiment.lock_is_free(held / ".lock") is False  # the owner's probe agrees
    holder.release()
    assert LockTable().held(held / ".lock") is False and experiment.lock_is_free(held / ".lock")
    with open(free / ".lock", "a+") as handle:  # this very process
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert LockTable().held(free / ".lock") is True


def test_running_killed_damaged_and_unstarted_experiments(real_runs, tmp_path, lock_holder, capsys):
    runs = tmp_path / "runs"
    source = real_runs / "exp1"
    heartbeat = {"state": "running", "pid": 1, "epoch": 1, "target_epochs": 9, "updated": "2026-01-01T00:00:00+0000"}
    running = fabricate(runs, "exp1", source, status=heartbeat)
    fabricate(runs, "exp2", source, status=heartbeat)  # nobody holds its lock: the process died
    damaged = fabricate(runs, "exp3", source)
    (damaged / "status.json").write_text('{"state": "compl')
    fabricate(runs, "exp4", source, status={"state": "interrupted", "signal": "SIGTERM", "epoch": 1})
    bare = fabricate(runs, "exp5", source)
    (bare / "status.json").unlink()
    fabricate(runs, "exp6", source, status={"state": "failed", "reason": "non-finite loss", "epoch": 1})
    fabricate(runs, "exp7", source, status={"state": "stopped_early", "epoch": 2})
    holder = lock_holder(running)
    before = tree_hashes(runs)

    code, out, err = run_tool(capsys, "list", "--runs-dir", str(runs))
    assert code == 0, err
    assert row_of(out, "exp1").split()[1:2] == ["running"] and "1/9" in row_of(out, "exp1")
    assert row_of(out, "exp2").split()[1] == "killed"
    assert row_of(out, "exp3").split()[1] == "damaged"
    assert "exp3: " in out and "status.json is not valid JSON" in out, "the damage is named under the table"
    assert "interrupted (SIGTERM)" in row_of(out, "exp4")
    assert row_of(out, "exp5").split()[1:3] == ["not", "started"]
    assert "failed (diverged)" in row_of(out, "exp6")
    assert "stopped early" in row_of(out, "exp7")
    rows = {r["name"]: r for r in list_experiments(runs)}
    assert rows["exp1"]["pid"] == holder.pid and rows["exp2"]["pid"] is None
    assert tree_hashes(runs) == before, "listing wrote nothing"
    holder.release()
    assert {r["name"]: r["state"] for r in list_experiments(runs)}["exp1"] == "killed"


def test_listing_never_takes_a_lock(real_runs, tmp_path, lock_holder, monkeypatch):
    runs = tmp_path / "runs"
    experiment = fabricate(runs, "exp1", real_runs / "exp1", status={"state": "running", "epoch": 1})
    lock_holder(experiment)
    import fcntl

    def refuse(*args, **kwargs):
        raise AssertionError("exptrain list called flock")

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(fcntl, "lockf", refuse)
    assert list_experiments(runs)[0]["state"] == "running"


def test_running_experiment_is_refused_unless_out_is_elsewhere(copy_runs, lock_holder, tmp_path, capsys):
    experiment = copy_runs / "exp1"
    holder = lock_holder(experiment)
    before = tree_hashes(experiment)
    code, out, err = run_tool(capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"process {holder.pid} holds its lock" in err and "--out DIR" in err
    code, _, err = run_tool(capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs), "--out", str(experiment / "x"))
    assert code == 2, "an --out inside the running experiment is refused too"
    code, _, err = run_tool(
        capsys, "evaluate", "exp1", "--runs-dir", str(copy_runs), "--out", str(tmp_path / "ev"), "--mistakes", "2"
    )
    assert code == 0, err
    assert (tmp_path / "ev" / "evaluation.json").is_file()
    assert tree_hashes(experiment) == before


def test_running_experiment_is_refused(copy_runs, lock_holder, capsys):
    lock_holder(copy_runs / "exp1")
    code, _, err = run_tool(capsys, "export", "exp1", "--runs-dir", str(copy_runs))
    assert code == 2 and "is running" in err and not (copy_runs / "exp1" / "export").exists()


def test_eight_concurrent_creations_get_distinct_directories(tmp_path):
    for round_number in range(3):
        runs = tmp_path / f"runs{round_number}"
        go = tmp_path / f"go{round_number}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _CREATE, str(runs), str(go)],
                cwd=REPO_ROOT,
                env=cli_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        try:
            assert all(p.stdout.readline().strip() == "ready" for p in processes)
        finally:  # even when one failed to start: the others wait for this file, then exit
            go.touch()
        outputs = [p.communicate(timeout=HANG_TIMEOUT)[0].strip() for p in processes]
        assert all(p.returncode == 0 for p in processes)
        assert len(set(outputs)) == 8, outputs
        assert sorted(p.name for p in runs.iterdir()) == sorted(f"exp{i}" for i in range(1, 9))


def test_second_resume_is_refused_and_a_dead_holder_does_not_block(tmp_path):
    runs = tmp_path / "runs"
    ExperimentManager(str(runs), lock=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(runs)], cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ExperimentError, match=rf"'exp1' is in use by process {holder.pid}"):
            ExperimentManager(str(runs), resume_exp="exp1")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The lock file is still there with the dead PID, but the OS lock died with its holder.
    assert (runs / "exp1" / ".lock").read_text() == str(holder.pid)
    manager = ExperimentManager(str(runs), resume_exp="exp1")
    assert (runs / "exp1" / ".lock").read_text() == str(os.getpid())
    manager.release()


def test_status_of_a_dead_run_reads_killed(tmp_path):
    manager = ExperimentManager(str(tmp_path), lock=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (Path(manager.experiment_dir) / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid}))
    assert manager.read_status()["state"] == "killed"
