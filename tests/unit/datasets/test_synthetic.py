"""The synthetic data set: its option checks, its memory cap, and its generated data."""

from __future__ import annotations

import pytest
import torch

from src.config import ConfigError
from src.datasets import DatasetRegistry
from src import checks as options

BAD_OPTIONS = [
    # (options, the option the message names, text the message must contain)
    ({"num_samples": 100.5}, "num_samples", "100.5"),
    ({"num_samples": 0}, "num_samples", "got 0"),
    ({"num_samples": -1}, "num_samples", "got -1"),
    ({"num_samples": True}, "num_samples", "got True"),
    ({"num_samples": "100"}, "num_samples", "got '100'"),
    ({"num_samples": 100_000_000}, "num_samples", "limit"),
    ({"num_classes": 1}, "num_classes", "got 1"),
    ({"num_classes": 0}, "num_classes", "got 0"),
    ({"num_classes": 2.5}, "num_classes", "got 2.5"),
    ({"num_classes": True}, "num_classes", "got True"),
    ({"input_shape": [1, 28]}, "input_shape", "[1, 28]"),
    ({"input_shape": [1, 28, -1]}, "input_shape", "[1, 28, -1]"),
    ({"input_shape": [1, 28, 0]}, "input_shape", "[1, 28, 0]"),
    ({"input_shape": [1, 28.5, 28]}, "input_shape", "28.5"),
    ({"input_shape": [1, True, 28]}, "input_shape", "True"),
    ({"input_shape": "abc"}, "input_shape", "'abc'"),
    ({"input_shape": 28}, "input_shape", "got 28"),
    ({"input_shape": [3, 100_000, 100_000]}, "input_shape", "limit"),
    ({"noise": float("nan")}, "noise", "nan"),
    ({"noise": float("inf")}, "noise", "inf"),
    ({"noise": -1}, "noise", "got -1"),
    ({"noise": "loud"}, "noise", "'loud'"),
    ({"noise": True}, "noise", "True"),
]


@pytest.mark.parametrize("kwargs,option,fragment", BAD_OPTIONS, ids=[repr(o[0]) for o in BAD_OPTIONS])
def test_bad_options_are_one_clear_config_error(kwargs, option, fragment):
    with pytest.raises(ConfigError) as error:
        DatasetRegistry.create("synthetic", **kwargs)
    message = str(error.value)
    assert f"--dataset-option {option}" in message and fragment in message, message
    assert "\n" not in message and message.endswith(".")


def test_memory_cap_is_stated_and_suggests_a_size(monkeypatch):
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 1 << 30)  # as on any machine with >= 4 GiB
    with pytest.raises(ConfigError) as error:
        DatasetRegistry.create("synthetic", num_samples=100_000_000)
    message = str(error.value)
    assert "over the 1.0 GiB limit" in message and "num_samples <= " in message
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 4 << 20)  # 4 MiB: a cheap check of the suggestion
    with pytest.raises(ConfigError) as error:
        DatasetRegistry.create("synthetic", num_samples=10_000)
    largest = int(str(error.value).split("num_samples <= ")[1].split(" ")[0].rstrip(",.").replace(",", ""))
    assert DatasetRegistry.create("synthetic", num_samples=largest, noise=0).train_images.shape[0] == largest
    with pytest.raises(ConfigError):
        DatasetRegistry.create("synthetic", num_samples=largest + 1)


def test_memory_budget_is_the_smaller_of_1_gib_and_a_quarter_of_ram():
    budget = options.memory_budget_bytes()
    assert 0 < budget <= 1 << 30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_shape": [1, 28, 14]},  # non-square is a legal data set
        {"input_shape": (3, 5, 7), "num_classes": 2},
        {"noise": 0},
        {"noise": 1e6},
        {"num_samples": 1},
    ],
)
def test_good_options(kwargs):
    dataset = DatasetRegistry.create("synthetic", **{"num_samples": 16, **kwargs})
    shape = tuple(kwargs.get("input_shape", (1, 28, 28)))
    assert dataset.input_shape == shape and dataset.num_classes == kwargs.get("num_classes", 10)
    assert len(dataset.test_labels) == max(1, len(dataset) // 4)


def reference_synthetic(num_samples, num_classes, input_shape, noise, seed):
    """The straightforward formula the generator must keep producing (bit for bit)."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((num_classes, *input_shape), generator=generator) * 255

    def make(n):
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        pixels = prototypes[labels] + torch.randn((n, *input_shape), generator=generator) * noise
        return pixels.round().clamp(0, 255).to(torch.uint8), labels

    return make(num_samples) + make(max(1, num_samples // 4))


@pytest.mark.parametrize(
    "num_samples,num_classes,shape,noise,seed",
    [
        (2048, 10, (1, 28, 28), 60.0, 42),
        (333, 3, (3, 9, 5), 200, 7),
    ],
)
def test_generated_data_is_unchanged(num_samples, num_classes, shape, noise, seed):
    dataset = DatasetRegistry.create(
        "synthetic", num_samples=num_samples, num_classes=num_classes, input_shape=shape, noise=noise, seed=seed
    )
    train_images, train_labels, test_images, test_labels = reference_synthetic(
        num_samples, num_classes, shape, noise, seed
    )
    assert torch.equal(dataset.train_images, train_images) and torch.equal(dataset.train_labels, train_labels)
    assert torch.equal(dataset.test_images, test_images) and torch.equal(dataset.test_labels, test_labels)
