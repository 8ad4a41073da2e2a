from src.training.history import append_epoch, empty_history, read_log, write_log


def _record(epoch):
    return dict(
        epoch=epoch,
        train_loss=1.0 / epoch,
        train_accuracy=50.0 + epoch,
        val_loss=0.5 / epoch,
        val_accuracy=60.0 + epoch,
        learning_rate=1e-3,
        epoch_time=0.1 * epoch,
    )


def test_log_round_trip_is_exact(tmp_path):
    history = empty_history()
    for epoch in (1, 2, 3):
        append_epoch(history, _record(epoch))
    write_log(tmp_path / "log.jsonl", history)
    assert read_log(tmp_path / "log.jsonl") == history


def test_partial_last_line_is_ignored(tmp_path):
    history = empty_history()
    append_epoch(history, _record(1))
    path = tmp_path / "log.jsonl"
    write_log(path, history)
    with open(path, "a") as handle:
        handle.write('{"epoch": 2, "train_lo')
    assert read_log(path) == history


def test_missing_log_is_empty(tmp_path):
    assert read_log(tmp_path / "nope.jsonl") == empty_history()
