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


def test_update_does_not_read_values_back(monkeypatch):
    tracker = MetricsTracker()
    reads = []
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(self) or 0.0)
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self) or [])
    for _ in range(10):
        tracker.update(torch.tensor(0.25), torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert reads == [], "update must not read device values back"
    assert tracker.total_samples == 10


def test_flush_points_do_not_change_the_sums(monkeypatch):
    import src.training.metrics as metrics_module

    batches = [(torch.rand(()) * 3, torch.randn(7, 5), torch.randint(0, 5, (7,))) for _ in range(50)]
    reference = MetricsTracker()
    for batch in batches:
        reference.update(*batch)
    monkeypatch.setattr(metrics_module, "FLUSH_EVERY", 3)
    chunked = MetricsTracker()
    for batch in batches:
        chunked.update(*batch)
    assert chunked.get_metrics() == reference.get_metrics()


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


def test_update_keeps_no_tensor_of_the_batch():
    # Small tensors kept until the epoch's end pinned the heap holes of freed activations
    # (the process grew by about one activation per step): the tracker writes into two
    # buffers allocated once instead.
    tracker = MetricsTracker()
    for step in range(50):
        outputs, labels = torch.randn(8, 3, requires_grad=True), torch.randint(0, 3, (8,))
        tracker.update(outputs.sum() * 0 + step, outputs, labels)
    tensors = [value for value in vars(tracker).values() if torch.is_tensor(value)]
    assert len(tensors) == 2 and all(not t.requires_grad for t in tensors)
    held = [item for value in vars(tracker).values() if isinstance(value, list) for item in value]
    assert not any(torch.is_tensor(item) for item in held)
    assert tracker.get_metrics()["loss"] == pytest.approx(sum(range(50)) / 50)


def test_numbers_and_tensors_mix_and_keep_full_precision():
    tracker = MetricsTracker()
    tracker.update(0.1, torch.tensor([[1.0, 0.0]]), torch.tensor([0]))  # a float64 number stays exact
    tracker.update(torch.tensor(0.5), torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    metrics = tracker.get_metrics()
    assert metrics["loss"] == (0.1 + 0.5) / 2 and metrics["accuracy"] == 50.0
    tracker.update(torch.tensor(float("nan")), torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    tracker.get_metrics()
    assert tracker.non_finite


def test_an_empty_batch_adds_nothing_to_the_metrics():
    """FAILS ON MAIN: an empty batch's mean loss is NaN (cross entropy over no samples);
    the tracker adds NaN * 0 = NaN to its sum, so the epoch's loss becomes NaN and
    ``non_finite`` is set (a Trainer would report divergence) though no sample was seen."""
    outputs, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    loss = torch.nn.functional.cross_entropy(outputs, labels)
    empty_outputs, empty_labels = torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    empty_loss = torch.nn.functional.cross_entropy(empty_outputs, empty_labels)  # tensor(nan)
    tracker = MetricsTracker()
    tracker.update(loss, outputs, labels)
    tracker.update(empty_loss, empty_outputs, empty_labels)
    metrics = tracker.get_metrics()
    assert not tracker.non_finite
    assert metrics == {"loss": pytest.approx(loss.item()), "accuracy": 50.0, "total_samples": 2}
