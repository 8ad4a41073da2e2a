import pytest
import torch

from src.training.metrics import MetricsTracker


def test_tracker_matches_hand_computation():
    tracker = MetricsTracker()
    outputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    labels = torch.tensor([0, 0, 0])
    tracker.update(torch.tensor(0.5), outputs, labels)
    tracker.update(1.0, torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    metrics = tracker.get_metrics()
    assert metrics["total_samples"] == 4
    assert metrics["loss"] == pytest.approx((0.5 * 3 + 1.0 * 1) / 4)
    assert metrics["accuracy"] == pytest.approx(75.0)
    tracker.reset()
    assert tracker.get_metrics() == {"loss": 0.0, "accuracy": 0.0, "total_samples": 0}


def test_update_does_not_read_values_back():
    tracker = MetricsTracker()
    tracker.update(torch.tensor(0.25), torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert torch.is_tensor(tracker._loss_sum) and torch.is_tensor(tracker._correct), "accumulates on the device"


def test_state_round_trip_continues_identically():
    a, b = MetricsTracker(), MetricsTracker()
    batches = [(torch.tensor(0.1 * i), torch.randn(5, 3), torch.randint(0, 3, (5,))) for i in range(6)]
    for batch in batches:
        a.update(*batch)
    for batch in batches[:3]:
        b.update(*batch)
    c = MetricsTracker()
    c.load_state_dict(b.state_dict())
    for batch in batches[3:]:
        c.update(*batch)
    assert c.get_metrics() == a.get_metrics()
