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


# -- argument checks ------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_ARGUMENTS = [
    # (model, arguments, the option the message names, text the message must contain)
    ("mynet", {"width": -3}, "--model-option width", "got -3"),
    ("mynet", {"width": 0}, "--model-option width", "got 0"),
    ("mynet", {"width": 1.5}, "--model-option width", "got 1.5"),
    ("mynet", {"width": "abc"}, "--model-option width", "got 'abc'"),
    ("mynet", {"width": True}, "--model-option width", "got True"),
    ("mynet", {"width": 100_000}, "--model-option width", "limit"),
    ("mlp", {"hidden_sizes": [-3]}, "--model-option hidden_sizes", "-3"),
    ("mlp", {"hidden_sizes": [16, 0]}, "--model-option hidden_sizes", "[16, 0]"),
    ("mlp", {"hidden_sizes": [16.5]}, "--model-option hidden_sizes", "16.5"),
    ("mlp", {"hidden_sizes": [True]}, "--model-option hidden_sizes", "True"),
    ("mlp", {"hidden_sizes": "abc"}, "--model-option hidden_sizes", "'abc'"),
    ("mlp", {"hidden_sizes": 128}, "--model-option hidden_sizes", "got 128"),
    ("mlp", {"hidden_sizes": [100_000, 100_000]}, "--model-option hidden_sizes", "limit"),
    ("mynet", {"dropout": 1.5}, "--model-option dropout", "got 1.5"),
    ("mynet", {"dropout": 1}, "--model-option dropout", "got 1"),
    ("mynet", {"dropout": -0.1}, "--model-option dropout", "got -0.1"),
    ("mynet", {"dropout": NAN}, "--model-option dropout", "got nan"),
    ("mynet", {"dropout": INF}, "--model-option dropout", "got inf"),
    ("mynet", {"dropout": True}, "--model-option dropout", "got True"),
    ("mlp", {"dropout": "0.5"}, "--model-option dropout", "got '0.5'"),
    ("lenet5", {"input_size": 15}, "input_size", "got 15"),
    ("mynet", {"input_size": 3}, "input_size", "got 3"),
    ("mlp", {"input_size": 0}, "input_size", "got 0"),
    ("mynet", {"input_size": 28.0}, "input_size", "got 28.0"),
] + [
    (model, arguments, option, fragment)
    for model in ("lenet5", "mlp", "mynet")
    for arguments, option, fragment in [
        ({"num_classes": 0}, "num_classes", "got 0"),
        ({"num_classes": -2}, "num_classes", "got -2"),
        ({"num_classes": True}, "num_classes", "got True"),
        ({"num_classes": 2.5}, "num_classes", "got 2.5"),
        ({"in_channels": 0}, "in_channels", "got 0"),
        ({"in_channels": "3"}, "in_channels", "got '3'"),
        ({"input_size": -28}, "input_size", "got -28"),
    ]
]


@pytest.mark.parametrize("name,arguments,option,fragment", BAD_ARGUMENTS,
                         ids=[f"{b[0]}-{b[1]!r}" for b in BAD_ARGUMENTS])
def test_bad_arguments_are_one_clear_config_error(name, arguments, option, fragment):
    from src.config import ConfigError

    with pytest.raises(ConfigError) as error:
        ModelRegistry.create(name, **arguments)
    message = str(error.value)
    assert name in message and option in message and fragment in message, message
    assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize("name,arguments", [
    ("mlp", {"hidden_sizes": []}),  # a linear model, as documented
    ("mlp", {"hidden_sizes": (8, 4), "dropout": 0.5}),
    ("lenet5", {"input_size": 16}),
    ("lenet5", {"input_size": 32, "in_channels": 3}),
    ("mynet", {"input_size": 4, "width": 1, "dropout": 0}),
    ("mynet", {"num_classes": 1}),
])
def test_edge_arguments_build_a_working_model(name, arguments):
    model = ModelRegistry.create(name, **arguments)
    config = model.model_config
    x = torch.randn(2, config["in_channels"], config["input_size"], config["input_size"])
    assert model(x).shape == (2, config["num_classes"])
    assert build_model(config).model_config == config


@pytest.mark.parametrize("name,arguments", [
    ("mlp", {"hidden_sizes": [32, 16], "num_classes": 7, "in_channels": 3, "input_size": 9}),
    ("mlp", {"hidden_sizes": []}),
    ("mynet", {"width": 8, "in_channels": 2, "input_size": 13, "num_classes": 5}),
    ("lenet5", {"input_size": 28}),
    ("lenet5", {"input_size": 37, "in_channels": 3, "num_classes": 4}),
])
def test_parameter_budget_counts_exactly(monkeypatch, name, arguments):
    """The size check counts parameters before allocating them; the count must be exact."""
    from src.config import ConfigError
    from src.datasets import options

    count = sum(p.numel() for p in ModelRegistry.create(name, **arguments).parameters())
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 4 * count)
    ModelRegistry.create(name, **arguments)
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 4 * count - 1)
    with pytest.raises(ConfigError, match=f"{count:,} parameters"):
        ModelRegistry.create(name, **arguments)
