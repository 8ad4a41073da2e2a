"""Hostile tests of the background checkpoint writer (issue 11): interrupts, failures and
retries around a write that is still in flight.

Tests marked ``FAILS ON MAIN`` reproduce a real failure of the current code (see the
docstring of each for what happens and the suggested fix); the others pin a promise of
README "Guarantees" that held under attack and had no test of its own.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import src.utils.io as io_module
from src.training import CheckpointManager, ExperimentManager, Trainer
from src.training import state_keys as keys
from src.training.checkpoint import CheckpointSaveError
from tests.helpers import HANG_TIMEOUT, REPO_ROOT, cli_env
from tests.helpers import make_background_trainer as make_trainer


# -- helpers ---------------------------------------------------------------------------
def _main_stack() -> list:
    """The function names on the main thread's stack, innermost first."""
    frame, names = sys._current_frames().get(threading.main_thread().ident), []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def _main_waits_for_writer(caller: str) -> bool:
    """The main thread is blocked waiting for the writer (joining it, or on its event), in
    ``wait_quietly`` called by ``caller``."""
    names = _main_stack()
    return (
        bool(names)
        and names[0] in ("_wait_for_tstate_lock", "join", "wait")
        and "wait_quietly" in names
        and names[names.index("wait_quietly") + 1] == caller
    )


def _poll(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def _hold_save(monkeypatch, epoch_to_hold: int):
    """Hold the epoch-end save of ``epoch_to_hold`` on the writer thread until ``gate`` is
    set; ``finished`` is set once that save has returned."""
    gate, finished = threading.Event(), threading.Event()
    real_save = CheckpointManager.save_epoch_end

    def held(self, model, optimizer, epoch, *args, **kwargs):
        if epoch == epoch_to_hold:
            gate.wait(60)
        result = real_save(self, model, optimizer, epoch, *args, **kwargs)
        if epoch == epoch_to_hold:
            finished.set()
        return result

    monkeypatch.setattr(CheckpointManager, "save_epoch_end", held)
    return gate, finished


def _status(trainer: Trainer) -> dict:
    return json.loads((Path(trainer.experiment_manager.experiment_dir) / "status.json").read_text())


def _log_epochs(trainer: Trainer) -> list:
    log = Path(trainer.experiment_manager.log_file)
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.exists() else []


def _full_disk_after(monkeypatch, saved_epochs: int):
    """Every large write fails with ENOSPC once the save of ``saved_epochs`` has returned
    (until ``armed["freed"]`` is set)."""
    real_write_all, armed = io_module._write_all, {"on": False, "freed": False}

    def full_disk(fd, data):
        if armed["on"] and len(data) > 2000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    real_save = CheckpointManager.save_epoch_end

    def arming(self, model, optimizer, epoch, *args, **kwargs):
        result = real_save(self, model, optimizer, epoch, *args, **kwargs)
        if epoch == saved_epochs and not armed["freed"]:
            armed["on"] = True
        return result

    monkeypatch.setattr(io_module, "_write_all", full_disk)
    monkeypatch.setattr(CheckpointManager, "save_epoch_end", arming)
    return armed


def _weights(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


# -- FAILS ON MAIN: a KeyboardInterrupt while waiting for the writer ------------------
@pytest.fixture
def python_sigint(monkeypatch):
    """Python's own SIGINT handler (KeyboardInterrupt), as in a notebook or script that
    built its Trainer with ``handle_signals=False``."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_wait_never_returns_with_a_write_in_flight(tmp_path, monkeypatch, python_sigint):
    """FAILS ON MAIN. ``handle_signals=False`` (the Python API in a notebook): Ctrl-C while
    the training thread waits for the epoch-1 write. ``train()`` must not return (raise)
    before that write is done, nor record its final status before the writer's "running"
    record (the lock is released in ``finally``).

    What happens: on Python 3.11 a ``Thread.join()`` interrupted by KeyboardInterrupt
    marks the still-running thread as stopped (CPython gh-90882: ``_wait_for_tstate_lock``
    releases the thread's lock when ``lock.locked()``, which is true while the thread
    runs). Every later ``join`` - the except handler's and ``finally``'s - returns at once:
    train() raises, records "failed" at epoch 1 (no checkpoint holds epoch 1 yet) and
    releases the lock while the epoch-1 save is still being written; the writer then
    overwrites status.json with "running", which a reader in another process shows for
    as long as the notebook's kernel lives. Fix: do not rely on ``Thread.join`` surviving an exception; have the job set
    a ``threading.Event`` in ``_run``'s ``finally`` and wait on it in a loop that catches
    KeyboardInterrupt (or any BaseException), finishes waiting, then re-raises it."""
    gate, finished = _hold_save(monkeypatch, 1)
    trainer = make_trainer(tmp_path / "runs")
    trainer.stop_request.enabled = False
    statuses = []
    real_write_status = ExperimentManager.write_status

    def noting_write_status(self, state, **details):
        real_write_status(self, state, **details)
        statuses.append((state, threading.current_thread().name))

    monkeypatch.setattr(ExperimentManager, "write_status", noting_write_status)
    returned = threading.Event()

    def interrupter():
        if _poll(lambda: _main_waits_for_writer("wait_for_writes")):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        # A correct trainer now waits again (for the write to end); a broken one returns.
        _poll(
            lambda: returned.is_set() or (_main_waits_for_writer("_run_epochs") or _main_waits_for_writer("train")),
            timeout=20,
        )
        gate.set()

    helper = threading.Thread(target=interrupter, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        try:
            trainer.train(epochs=3)
        finally:
            done_when_raised = finished.is_set()
            returned.set()
    helper.join(30)
    assert finished.wait(30)
    _poll(lambda: ("running", "exptrain-writer") in statuses, timeout=10)
    time.sleep(0.2)  # let a writer that was left running finish its status record
    assert done_when_raised, "train() raised while the epoch-1 checkpoint was still being written"
    assert _status(trainer)["state"] != "running", f"status.json says running after train() ended: {statuses}"


@pytest.mark.slow
def test_ctrl_c_during_the_wait_in_a_script_lets_the_write_finish(tmp_path):
    """FAILS ON MAIN. The same in a real process (a script using the Python API with
    ``handle_signals=False``): after Ctrl-C during the wait the interpreter must still
    finish the write in progress before exiting (background.py promises it: the writer is
    not a daemon). What happens: the interrupted ``join`` marks the writer stopped, so the
    interpreter's shutdown does not wait for it: the process exits at once, the epoch-1
    checkpoint is never written. Fix: as above."""
    script = tmp_path / "script.py"
    script.write_text(f"""
import os, signal, sys, threading, time
sys.path.insert(0, {str(REPO_ROOT)!r})
import torch
torch.set_num_threads(1)
from pathlib import Path
from src.training import CheckpointManager
from tests.helpers import make_background_trainer as make_trainer
from tests.e2e.test_background_write_faults import _main_waits_for_writer, _poll

real_save = CheckpointManager.save_epoch_end
def slow(self, model, optimizer, epoch, *args, **kwargs):
    if epoch == 1:  # the write is still going when Ctrl-C meets the main thread's wait for it
        if not _poll(lambda: _main_waits_for_writer("wait_for_writes"), timeout=900):  # epoch 2 first, on a loaded CPU
            print("the main thread never waited for the epoch-1 write", file=sys.stderr, flush=True)
            os._exit(3)  # from this writer thread: sys.exit would end only the thread, silently
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.5)  # a broken wait returns now, and the process exits before this write
    return real_save(self, model, optimizer, epoch, *args, **kwargs)
CheckpointManager.save_epoch_end = slow
trainer = make_trainer(Path(sys.argv[1]))
trainer.stop_request.enabled = False
trainer.train(epochs=3)
""")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs")],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert "KeyboardInterrupt" in result.stderr, result.stdout + result.stderr
    checkpoints = tmp_path / "runs" / "exp1" / "checkpoints"
    _, payload, problems = CheckpointManager(str(checkpoints), read_only=True).find_latest_valid()
    assert payload is not None and payload["epoch"] == 1, (
        f"the process exited before the epoch-1 write finished: {sorted(p.name for p in checkpoints.iterdir())}"
    )


# -- FAILS ON MAIN: train() again after a failed background write -----------------------
@pytest.mark.parametrize("background", [True, False])
def test_train_again_after_a_failed_write_continues_from_the_saved_epoch(tmp_path, monkeypatch, background):
    """FAILS ON MAIN (both paths; the background path is two epochs off). A notebook user
    frees disk space after the documented error ("...then resume the run") and calls
    ``trainer.train(epochs=4)`` again. The trainer says it stopped at its last saved epoch
    (``trainer.epoch`` and ``history`` rolled back to 1), but the model, optimizer,
    global_step, RNG and loader position are those of epoch 3 (background) or 2
    (synchronous): the retry trains epochs "2-4" on top of them, saves a checkpoint
    labelled epoch 4 holding 6 (or 5) epochs of steps, and its result matches neither an
    uninterrupted run nor ``--resume``. Fix: on a failed write, load the last committed
    checkpoint back into the trainer (``load_state_dict(find_latest_valid payload)``), or
    make the next ``train()`` refuse with one clear error saying to resume from disk."""
    armed = _full_disk_after(monkeypatch, saved_epochs=1)
    trainer = make_trainer(tmp_path / "runs", background=background)
    with pytest.raises(CheckpointSaveError):
        trainer.train(epochs=4)
    assert trainer.epoch == 1
    armed.update(on=False, freed=True)  # space freed
    try:
        trainer.train(epochs=4)
    except Exception as exc:  # refusing clearly is an acceptable fix
        assert "resume" in str(exc).lower(), exc
        return
    reference = make_trainer(tmp_path / "reference", background=background)
    reference.train(epochs=4)
    assert trainer.global_step == reference.global_step, "the retry trained more steps than its epochs hold"
    for key, value in _weights(reference).items():
        assert torch.equal(trainer.model.state_dict()[key], value), f"{key} differs from an uninterrupted run"


# -- held: signals while a write is in flight -----------------------------------------
def _signal_from_the_writer(monkeypatch, epoch_to_hold: int, signum: int, times: int = 2):
    """The save of ``epoch_to_hold`` sends ``signum`` (``times`` times) to the main thread,
    then holds until the main thread waits for it (so the signal meets a pending write)."""
    real_save = CheckpointManager.save_epoch_end
    held = {"waited": None}

    def signalling(self, model, optimizer, epoch, *args, **kwargs):
        if epoch == epoch_to_hold:
            for _ in range(times):
                signal.pthread_kill(threading.main_thread().ident, signum)
                time.sleep(0.01)
            held["waited"] = _poll(
                lambda: _main_waits_for_writer("wait_for_writes") or _main_waits_for_writer("_run_epochs"), timeout=30
            )
        return real_save(self, model, optimizer, epoch, *args, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save_epoch_end", signalling)
    return held


def _resumed_from_latest(trainer: Trainer, directory: Path) -> Trainer:
    """A fresh trainer continued from ``trainer``'s newest valid checkpoint (as --resume does)."""
    _, payload, problems = trainer.checkpoint_manager.find_latest_valid()
    assert payload is not None and not problems, problems
    resumed = make_trainer(directory)
    resumed.load_state_dict(payload)
    return resumed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_twice_during_a_pending_write_stops_cleanly_and_resumes_bit_exact(tmp_path, monkeypatch, signum):
    """Two signals while the epoch-1 write is in flight (the training thread is in epoch 2
    or waiting for it): TrainingInterrupted with that signal, status "interrupted" at the
    epoch the newest checkpoint holds, log lines only for saved epochs, and the resumed run
    ends bit-identical to an uninterrupted one."""
    reference = make_trainer(tmp_path / "reference")
    reference.train(epochs=4)
    held = _signal_from_the_writer(monkeypatch, 1, signum)
    trainer = make_trainer(tmp_path / "runs")
    with pytest.raises(Exception) as raised:
        trainer.train(epochs=4)
    assert type(raised.value).__name__ == "TrainingInterrupted" and raised.value.signum == signum, raised.value
    assert held["waited"], "the training thread never waited for the held write"
    _, payload, _ = trainer.checkpoint_manager.find_latest_valid()
    status = _status(trainer)
    assert status["state"] == "interrupted" and status["signal"] == signal.Signals(signum).name
    assert status["epoch"] == payload["epoch"] == trainer.epoch
    assert _log_epochs(trainer) == list(range(1, payload["epoch"] + 1))
    monkeypatch.undo()
    resumed = _resumed_from_latest(trainer, tmp_path / "resumed")
    resumed.train(epochs=4)
    for key, value in _weights(reference).items():
        assert torch.equal(resumed.model.state_dict()[key], value), f"{key} differs after the resume"
    assert resumed.global_step == reference.global_step
    assert resumed.optimizer.state_dict()["state"][0]["step"] == reference.optimizer.state_dict()["state"][0]["step"]


def test_signal_during_the_last_epochs_write_completes_the_run(tmp_path, monkeypatch, capsys):
    """SIGTERM while the last epoch's write is in flight: the run is complete (nothing is
    left to save), status "completed" at the last epoch, every epoch logged once."""
    held = _signal_from_the_writer(monkeypatch, 3, signal.SIGTERM)
    trainer = make_trainer(tmp_path / "runs")
    results = trainer.train(epochs=3)
    assert held["waited"] and results["epochs_trained"] == 3
    assert "arrived after the last epoch was saved" in capsys.readouterr().out
    status = _status(trainer)
    assert status["state"] == "completed" and status["epoch"] == 3
    assert _log_epochs(trainer) == [1, 2, 3]
    _, payload, _ = trainer.checkpoint_manager.find_latest_valid()
    assert payload["epoch"] == 3


# -- failures of the last write (no next epoch boundary) --------------------------------
def test_disk_full_during_the_last_epochs_write_fails_at_the_last_saved_epoch(tmp_path, monkeypatch):
    """ENOSPC during the epoch-3 checkpoint write of a 3-epoch run: there is no next
    boundary, so the error comes out of train() on the way out; status "failed" at epoch
    2, log, metrics.csv and history stop at epoch 2."""
    import src.training.checkpoint as checkpoint_module

    real_atomic, real_save, armed = checkpoint_module.atomic_write_bytes, CheckpointManager.save_epoch_end, {}

    def full_disk(path, data, **kwargs):
        if armed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_atomic(path, data, **kwargs)

    def arming(self, model, optimizer, epoch, *args, **kwargs):
        if epoch == 3:
            armed["on"] = True
        return real_save(self, model, optimizer, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", full_disk)
    monkeypatch.setattr(CheckpointManager, "save_epoch_end", arming)
    trainer = make_trainer(tmp_path / "runs")
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        trainer.train(epochs=3)
    status = _status(trainer)
    assert status["state"] == "failed" and status["epoch"] == 2 and "No space left" in status["error"]
    assert _log_epochs(trainer) == [1, 2] and trainer.epoch == 2 and trainer.history["epoch"] == [1, 2]
    experiment = Path(trainer.experiment_manager.experiment_dir)
    assert (experiment / "metrics.csv").read_text().count("\n") == 3
    _, payload, problems = trainer.checkpoint_manager.find_latest_valid()
    assert payload["epoch"] == 2 and not problems


def test_a_failed_log_write_in_the_background_is_one_clear_error_and_resumable(tmp_path, monkeypatch):
    """The checkpoint of epoch 2 is written but its log line is not (ENOSPC in the
    writer's log write): a WriteError naming the log, status "failed" never ahead of the
    newest checkpoint, and a resume brings the log up to date and finishes the run."""
    import src.training.trainer_saves as trainer_module
    from src.errors import WriteError

    real_write_log = trainer_module.write_log

    def failing_write_log(path, history):
        if history["epoch"][-1] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_log(path, history)

    monkeypatch.setattr(trainer_module, "write_log", failing_write_log)
    trainer = make_trainer(tmp_path / "runs")
    with pytest.raises(WriteError, match="training_log"):
        trainer.train(epochs=3)
    _, payload, _ = trainer.checkpoint_manager.find_latest_valid()
    status = _status(trainer)
    assert status["state"] == "failed" and status["epoch"] <= payload["epoch"] == 2
    assert _log_epochs(trainer) == [1]
    monkeypatch.undo()
    resumed = _resumed_from_latest(trainer, tmp_path / "resumed")
    resumed.train(epochs=3)
    assert _log_epochs(resumed) == [1, 2, 3]


# -- readers, best model, memory ---------------------------------------------------------
def test_status_never_runs_ahead_of_the_newest_valid_checkpoint(tmp_path, monkeypatch):
    """A reader polling status.json (then the checkpoints) while every write is slowed:
    the status epoch never exceeds the epoch of the newest valid checkpoint."""
    real_save = CheckpointManager.save_epoch_end

    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save_epoch_end", slow)
    trainer = make_trainer(tmp_path / "runs")
    experiment = Path(trainer.experiment_manager.experiment_dir)
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                status = json.loads((experiment / "status.json").read_text())
            except (OSError, ValueError):
                continue
            _, payload, _ = CheckpointManager(str(experiment / "checkpoints"), read_only=True).find_latest_valid()
            seen.append((status.get("epoch", 0), payload["epoch"] if payload else 0))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        trainer.train(epochs=5)
    finally:
        stop.set()
        thread.join(30)
    assert len(seen) > 5 and max(s for s, _ in seen) >= 4
    assert all(status <= saved for status, saved in seen), [p for p in seen if p[0] > p[1]]


def test_best_model_is_the_best_epoch_with_background_writes_and_after_a_resume(tmp_path):
    """Noisy data (accuracy goes up and down): best_model.pt holds the first epoch with
    the highest accuracy, and a resumed manager knows that accuracy."""
    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry

    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=256, num_classes=4, input_shape=(1, 8, 8), noise=200, seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=32)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    experiment = ExperimentManager(base_dir=str(tmp_path / "runs"), lock=False)
    manager = CheckpointManager(experiment.checkpoints_dir, save_frequency=0)
    trainer = Trainer(
        model,
        train_loader,
        val_loader,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.5),
        torch.device("cpu"),
        experiment,
        manager,
        show_progress=False,
    )
    trainer.train(epochs=6)
    accuracies = trainer.history["val_accuracy"]
    assert len(set(accuracies)) > 1, "the data must make the accuracy move"
    best = max(accuracies)
    best_payload = manager.read(manager.best_path)
    assert best_payload["accuracy"] == best and best_payload["epoch"] == accuracies.index(best) + 1
    assert CheckpointManager(experiment.checkpoints_dir).best_accuracy == best


def test_frozen_states_do_not_outlive_their_write(tmp_path, monkeypatch):
    """Each epoch's snapshot is released once written: none is alive after the run, and
    at most two epochs' snapshots are alive at any epoch end."""
    import gc
    import weakref

    import src.training.trainer_saves as trainer_module

    alive, peak = [], {"n": 0}
    real_frozen = trainer_module.FrozenState

    class Counted(real_frozen):
        def __init__(self, source):
            super().__init__(source)
            alive.append(weakref.ref(self))
            gc.collect()
            peak["n"] = max(peak["n"], sum(ref() is not None for ref in alive))

    monkeypatch.setattr(trainer_module, "FrozenState", Counted)
    trainer = make_trainer(tmp_path / "runs")
    trainer.train(epochs=6)
    gc.collect()
    assert len(alive) == 12 and peak["n"] <= 4, peak
    assert not [ref for ref in alive if ref() is not None], "a snapshot outlived the run"


def _recipe_trainer(runs: Path, amp) -> Trainer:
    """EMA, a per-step one-cycle schedule, AMP (with its grad scaler for fp16) and a
    mid-epoch save after every optimizer step."""
    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry

    torch.manual_seed(0)
    data = DatasetRegistry.create("synthetic", num_samples=256, num_classes=4, input_shape=(1, 8, 8), seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=32)
    model = ModelRegistry.create("mlp", num_classes=4, input_size=8, hidden_sizes=[32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=4 * len(train_loader))
    experiment = ExperimentManager(base_dir=str(runs), lock=False)
    return Trainer(
        model,
        train_loader,
        val_loader,
        torch.nn.CrossEntropyLoss(),
        optimizer,
        torch.device("cpu"),
        experiment,
        CheckpointManager(experiment.checkpoints_dir, save_frequency=1, keep_last=2),
        scheduler=scheduler,
        show_progress=False,
        ema_decay=0.9,
        amp=amp,
        checkpoint_interval=1e-6,
    )


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_recipe_state_interrupted_during_a_pending_write_resumes_bit_exact(tmp_path, monkeypatch, amp):
    """EMA, one-cycle (stepped per optimizer step), AMP, keep_last pruning and a mid-epoch
    save after every step, all racing with the held epoch-1 write; SIGTERM meanwhile. The
    resumed run ends with the same weights, EMA, schedule and optimizer state as an
    uninterrupted one."""
    reference = _recipe_trainer(tmp_path / "reference", amp)
    reference.train(epochs=4)
    _signal_from_the_writer(monkeypatch, 1, signal.SIGTERM, times=1)
    trainer = _recipe_trainer(tmp_path / "runs", amp)
    with pytest.raises(Exception) as raised:
        trainer.train(epochs=4)
    assert type(raised.value).__name__ == "TrainingInterrupted", raised.value
    monkeypatch.undo()
    _, payload, problems = trainer.checkpoint_manager.find_latest_valid()
    assert not problems
    resumed = _recipe_trainer(tmp_path / "resumed", amp)
    resumed.load_state_dict(payload)
    resumed.train(epochs=4)
    final, expected = resumed.state_dict(), reference.state_dict()
    for key in (keys.MODEL, keys.EMA, keys.SCHEDULER, keys.SCALER, keys.OPTIMIZER, keys.GLOBAL_STEP):
        assert _equal(final[key], expected[key]), f"{key} differs after the resume"
    assert len(list(Path(trainer.checkpoint_manager.checkpoints_dir).glob("epoch_*.pt"))) <= 2


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b
