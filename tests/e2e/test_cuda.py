"""CUDA paths. They run only where a GPU is present (benchmarks/gpu.sh runs them on a
lent GPU machine); on CPU-only CI they are reported as skipped, never as passed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from src.datasets import DatasetRegistry
from src.models import ModelRegistry
from src.training import CheckpointManager, ExperimentManager, Trainer
from src.utils import get_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make(tmp_path, **options):
    torch.manual_seed(0)
    device = torch.device("cuda")
    data = DatasetRegistry.create("synthetic", num_samples=512, num_classes=4, input_shape=(1, 16, 16), seed=0)
    train_loader, val_loader = data.get_dataloaders(batch_size=64, device=device)
    model = ModelRegistry.create("mynet", num_classes=4, input_size=16, width=8).to(device)
    experiment = ExperimentManager(base_dir=str(tmp_path), lock=False)
    return Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=3e-3),
        device,
        experiment,
        CheckpointManager(experiment.checkpoints_dir, save_frequency=1),
        show_progress=False,
        **options,
    )


def test_get_device_prefers_cuda():
    assert get_device().type == "cuda"


def test_loader_data_lives_on_the_gpu(tmp_path):
    trainer = make(tmp_path)
    images, labels = next(iter(trainer.train_loader))
    assert images.is_cuda and labels.is_cuda and images.dtype == torch.float32


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"amp": "bf16"},
        {"amp": "fp16"},
        {"channels_last": True},
        {"compile_model": True},
        {"grad_accum_steps": 2, "grad_clip": 1.0},
    ],
)
def test_trains_and_resumes_on_cuda(tmp_path, options):
    trainer = make(tmp_path / "a", **options)
    results = trainer.train(epochs=3)
    assert results["best_accuracy"] > 60
    state = torch.load(trainer.checkpoint_manager.latest_path, weights_only=True)
    if options.get("amp") == "fp16":
        assert state["scaler_state_dict"]["scale"] > 0
    resumed = make(tmp_path / "b", **options)
    first = torch.load(trainer.checkpoint_manager.epoch_path(1), weights_only=True)
    resumed.load_state_dict(first)
    resumed.train(epochs=3)
    # CUDA kernels are not all deterministic; the resumed run must still land close.
    for key, value in trainer.model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, resumed.model.state_dict()[key], atol=5e-2, rtol=5e-2), key


def test_data_too_large_for_the_gpu_stays_on_the_host(tmp_path, monkeypatch):
    from src.datasets import TensorLoader

    monkeypatch.setattr(TensorLoader, "DEVICE_MEMORY_SHARE", 0.0)  # nothing "fits"
    trainer = make(tmp_path)
    loader = trainer.train_loader
    assert loader.storage_device.type == "cpu" and loader.images.is_pinned()
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda
    assert trainer.train(epochs=2)["best_accuracy"] > 60
