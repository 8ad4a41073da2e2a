import pytest

from src.training.early_stopping import EarlyStopping, is_improvement


def test_is_improvement_modes():
    assert is_improvement(1.0, None)
    assert is_improvement(2.0, 1.0) and not is_improvement(1.0, 1.0)
    assert is_improvement(0.5, 1.0, mode="min") and not is_improvement(1.5, 1.0, mode="min")
    assert not is_improvement(1.05, 1.0, min_delta=0.1)


def test_patience_counts_and_stops():
    stopper = EarlyStopping(patience=2)
    assert stopper.step(90.0, 1) and not stopper.should_stop
    assert not stopper.step(89.0, 2) and not stopper.should_stop
    assert not stopper.step(90.0, 3) and stopper.should_stop
    assert stopper.best_value == 90.0 and stopper.best_epoch == 1


def test_zero_patience_never_stops():
    stopper = EarlyStopping(patience=0)
    for epoch in range(1, 20):
        stopper.step(50.0, epoch)
    assert not stopper.should_stop and stopper.epochs_without_improvement == 18


def test_state_survives_round_trip():
    stopper = EarlyStopping(patience=3)
    for epoch, value in enumerate([80.0, 85.0, 84.0, 83.0], start=1):
        stopper.step(value, epoch)
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(stopper.state_dict())
    assert not restored.step(84.5, 5) and restored.should_stop


def test_bad_patience():
    with pytest.raises(ValueError, match="patience must be a non-negative integer"):
        EarlyStopping(patience=-1)
