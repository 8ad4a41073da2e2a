"""Every registered model: forward shape, backward, rebuild from its recorded config."""

from __future__ import annotations

import pytest
import torch

from src.models import ModelRegistry, build_model


@pytest.mark.parametrize("name", ModelRegistry.names())
@pytest.mark.parametrize("num_classes,channels,size", [(10, 1, 28), (3, 3, 32)])
def test_forward_backward_and_rebuild(name, num_classes, channels, size):
    torch.manual_seed(0)
    model = ModelRegistry.create(name, num_classes=num_classes, in_channels=channels, input_size=size)
    x = torch.randn(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, num_classes)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    config = model.model_config
    assert config["name"] == name and config["num_classes"] == num_classes
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_build_model_needs_a_name():
    with pytest.raises(ValueError, match="no 'name'"):
        build_model({"num_classes": 10})


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="choose one of: lenet5, mlp, mynet"):
        ModelRegistry.create("resnet9000")
