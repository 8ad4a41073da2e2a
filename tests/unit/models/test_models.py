"""Every registered model: forward shape, backward, rebuild from its recorded config; the
argument checks; sizing a model for a data set (``create_model_for``)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

from src.config import ConfigError
from src.models import ModelRegistry, build_model, create_model_for, model_data_arguments

# (channels, height = width): grey 28x28 (MNIST), RGB 32x32 (CIFAR), RGB 64x64 (Tiny ImageNet)
SHAPES = [(1, 28), (3, 32), (3, 64)]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the two-core CI machine is shared, and results must not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ModelRegistry.names())
@pytest.mark.parametrize("channels,size", SHAPES, ids=[f"{c}x{s}x{s}" for c, s in SHAPES])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_backward_and_rebuild(name, channels, size, num_classes):
    torch.manual_seed(0)
    model = ModelRegistry.create(name, num_classes=num_classes, in_channels=channels, input_size=size)
    x = torch.randn(2, channels, size, size)
    out = model(x)  # training mode: batch norm updates its running statistics
    assert out.shape == (2, num_classes)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    config = model.model_config
    assert config["name"] == name and config["num_classes"] == num_classes
    assert config["in_channels"] == channels and config["input_size"] == size
    buffer = io.BytesIO()  # as a checkpoint stores it
    torch.save({"model_config": config, "state": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = build_model(saved["model_config"])
    rebuilt.load_state_dict(saved["state"])  # strict: same architecture, same buffers
    assert rebuilt.model_config == config
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


@pytest.mark.parametrize("name", ModelRegistry.names())
def test_same_seed_same_model_and_outputs(name):
    """Construction and a training-mode forward/backward are deterministic on the CPU."""
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        model = ModelRegistry.create(name, num_classes=5, in_channels=3, input_size=32)
        x = torch.randn(2, 3, 32, 32)
        out = model(x)
        out.sum().backward()
        results.append((model.state_dict(), out.detach(), [p.grad for p in model.parameters()]))
    (state_a, out_a, grads_a), (state_b, out_b, grads_b) = results
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(out_a, out_b) and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_build_model_needs_a_name():
    with pytest.raises(ValueError, match="no 'name'"):
        build_model({"num_classes": 10})


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="choose one of: fastnet, lenet5, mlp, mynet, resnet18, resnet20, resnet56"):
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
    ("resnet18", {"width": 0}, "--model-option width", "got 0"),
    ("resnet18", {"width": "x"}, "--model-option width", "got 'x'"),
    ("resnet18", {"width": 10**9}, "--model-option width", "width=1000000000"),
    ("resnet18", {"width": 10**9}, "--model-option width", "limit"),
    ("resnet20", {"width": 1.5}, "--model-option width", "got 1.5"),
    ("resnet20", {"width": True}, "--model-option width", "got True"),
    ("resnet20", {"width": 10**6}, "--model-option width", "limit"),
    ("resnet56", {"width": -1}, "--model-option width", "got -1"),
    ("resnet56", {"width": "16"}, "--model-option width", "got '16'"),
    ("fastnet", {"widths": [0, 1, 1]}, "--model-option widths", "got [0, 1, 1]"),
    ("fastnet", {"widths": [64, 256]}, "--model-option widths", "got [64, 256]"),
    ("fastnet", {"widths": [64, 256, 256, 256]}, "--model-option widths", "got [64, 256, 256, 256]"),
    ("fastnet", {"widths": "x"}, "--model-option widths", "got 'x'"),
    ("fastnet", {"widths": 64}, "--model-option widths", "got 64"),
    ("fastnet", {"widths": [64, 2.5, 256]}, "--model-option widths", "2.5"),
    ("fastnet", {"widths": [10**6] * 3}, "--model-option widths", "limit"),
    ("resnet18", {"input_size": 7}, "input_size", "got 7"),
    ("resnet20", {"input_size": 3}, "input_size", "got 3"),
    ("resnet56", {"input_size": 3}, "input_size", "got 3"),
    ("fastnet", {"input_size": 8}, "input_size", "got 8"),
] + [
    (model, arguments, option, fragment)
    for model in ModelRegistry.names()
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


@pytest.mark.parametrize(
    "name,arguments,option,fragment", BAD_ARGUMENTS, ids=[f"{b[0]}-{b[1]!r}" for b in BAD_ARGUMENTS]
)
def test_bad_arguments_are_one_clear_config_error(name, arguments, option, fragment):
    from src.config import ConfigError

    with pytest.raises(ConfigError) as error:
        ModelRegistry.create(name, **arguments)
    message = str(error.value)
    assert name in message and option in message and fragment in message, message
    assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize(
    "name,arguments",
    [
        ("mlp", {"hidden_sizes": []}),  # a linear model, as documented
        ("mlp", {"hidden_sizes": (8, 4), "dropout": 0.5}),
        ("lenet5", {"input_size": 16}),
        ("lenet5", {"input_size": 32, "in_channels": 3}),
        ("mynet", {"input_size": 8, "width": 1, "dropout": 0}),
        ("mynet", {"input_size": 4, "width": 1, "dropout": 0, "version": 1}),
        ("mynet", {"num_classes": 1}),
        ("resnet18", {"input_size": 8, "width": 1, "num_classes": 1}),
        ("resnet20", {"input_size": 4, "width": 1, "in_channels": 2}),
        ("resnet56", {"input_size": 4, "width": 1}),
        ("resnet20", {"input_size": 33, "width": 2}),
        ("fastnet", {"input_size": 9, "widths": [1, 1, 1], "in_channels": 1}),
        ("fastnet", {"input_size": 31, "widths": (4, 2, 8), "num_classes": 1}),
    ],
)
def test_edge_arguments_build_a_working_model(name, arguments):
    model = ModelRegistry.create(name, **arguments)
    config = model.model_config
    x = torch.randn(2, config["in_channels"], config["input_size"], config["input_size"])
    assert model(x).shape == (2, config["num_classes"])
    assert build_model(config).model_config == config


@pytest.mark.parametrize(
    "name,arguments",
    [
        ("mlp", {"hidden_sizes": [32, 16], "num_classes": 7, "in_channels": 3, "input_size": 9}),
        ("mlp", {"hidden_sizes": []}),
        ("mynet", {"width": 8, "in_channels": 2, "input_size": 13, "num_classes": 5}),
        ("lenet5", {"input_size": 28}),
        ("lenet5", {"input_size": 37, "in_channels": 3, "num_classes": 4}),
        ("resnet18", {"width": 8, "num_classes": 7, "in_channels": 1}),
        ("resnet20", {}),
        ("resnet56", {"width": 4, "in_channels": 5, "num_classes": 2}),
        ("fastnet", {}),
        ("fastnet", {"widths": [3, 5, 7], "in_channels": 2, "num_classes": 3}),
    ],
)
def test_parameter_budget_counts_exactly(monkeypatch, name, arguments):
    """The size check counts parameters before allocating them; the count must be exact."""
    from src.config import ConfigError
    from src import checks as options

    count = sum(p.numel() for p in ModelRegistry.create(name, **arguments).parameters())
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 4 * count)
    ModelRegistry.create(name, **arguments)
    monkeypatch.setattr(options, "memory_budget_bytes", lambda: 4 * count - 1)
    with pytest.raises(ConfigError, match=f"{count:,} parameters"):
        ModelRegistry.create(name, **arguments)


# -- shapes other than square, and sizing a model for a data set ----------------------

NON_SQUARE = [name for name in ModelRegistry.names() if ModelRegistry.get(name).accepts_non_square_inputs]


def test_the_global_pooling_models_say_they_take_any_shape():
    assert {"fastnet", "resnet18", "resnet20", "resnet56"} <= set(NON_SQUARE)
    assert not {"lenet5", "mlp", "mynet"} & set(NON_SQUARE)  # their classifiers flatten a fixed size


@pytest.mark.parametrize("name", NON_SQUARE)
def test_models_that_accept_non_square_inputs_run_on_them(name):
    model = ModelRegistry.create(name, num_classes=4, in_channels=3, input_size=12)
    with torch.no_grad():
        for height, width in [(12, 40), (40, 12)]:
            assert model(torch.randn(2, 3, height, width)).shape == (2, 4)


class FakeData(SimpleNamespace):
    """Just what create_model_for reads from a data set."""


@pytest.mark.parametrize("name", ModelRegistry.names())
def test_create_model_for_takes_the_data_arguments_from_the_data_set(name):
    data = FakeData(num_classes=7, input_shape=torch.Size([1, 28, 28]))
    assert model_data_arguments(name, data) == {"num_classes": 7, "in_channels": 1, "input_size": 28}
    model = create_model_for(name, data)
    config = model.model_config
    assert (config["num_classes"], config["in_channels"], config["input_size"]) == (7, 1, 28)
    assert model.origin["name"] == name  # made through the registry, so a Python run can be recorded
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_create_model_for_passes_the_model_options_and_drops_unset_ones():
    data = FakeData(num_classes=3, input_shape=(3, 32, 32))
    assert create_model_for("resnet20", data, width=4).model_config["width"] == 4
    assert create_model_for("resnet20", data, width=None).model_config["width"] == 16
    assert create_model_for("fastnet", data, widths=[8, 8, 8]).model_config["widths"] == [8, 8, 8]


def test_create_model_for_on_a_real_non_square_data_set():
    from src.datasets import DatasetRegistry

    data = DatasetRegistry.create("synthetic", num_samples=8, num_classes=3, input_shape=[3, 20, 36])
    model = create_model_for("resnet20", data, width=2)
    assert model.model_config["input_size"] == 20  # the smaller side
    images = data.train_images[:2].float() / 255
    assert model(images).shape == (2, 3)
    with pytest.raises(ConfigError) as error:
        create_model_for("mynet", data)
    message = str(error.value)
    assert "'mynet' needs square images" in message and "20x36" in message, message
    assert "fastnet, resnet18, resnet20, resnet56" in message and message.endswith(".")


@pytest.mark.parametrize(
    "data,options,fragment",
    [
        (FakeData(num_classes=10, input_shape=(3, 4, 4)), {}, "resnet18's input_size must be an integer >= 8"),
        (FakeData(num_classes=10, input_shape=(3, 32, 32)), {"num_classes": 5}, "takes num_classes for model"),
        (
            FakeData(num_classes=10, input_shape=(3, 32, 32)),
            {"input_size": 5, "in_channels": 1},
            "takes in_channels, input_size for model 'resnet18' from the data set; do not pass them",
        ),
        (FakeData(num_classes=10, input_shape=(3, 32, 32)), {"depth": 3}, "no option depth; its options: width"),
        (FakeData(num_classes=10, input_shape=(3, 32, 32)), {"width": 0}, "got 0"),
        (FakeData(num_classes=10, input_shape=(3, 32)), {}, "got (3, 32) from FakeData"),
        (FakeData(num_classes=10, input_shape=(3, 32, 32.0)), {}, "got (3, 32, 32.0)"),
        (FakeData(num_classes=10, input_shape="3x32x32"), {}, "got '3x32x32'"),
        (FakeData(num_classes=10), {}, "got None from FakeData"),
        (FakeData(input_shape=(3, 32, 32)), {}, "needs a data set with num_classes; FakeData has none"),
        (FakeData(num_classes=0, input_shape=(3, 32, 32)), {}, "resnet18's num_classes must be an integer >= 1, got 0"),
    ],
)
def test_create_model_for_refuses_clearly(data, options, fragment):
    with pytest.raises(ConfigError) as error:
        create_model_for("resnet18", data, **options)
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.endswith("."), message


def test_create_model_for_an_unknown_model_lists_the_known_ones():
    with pytest.raises(KeyError, match="Unknown model 'resnet9000'; choose one of: fastnet, lenet5"):
        create_model_for("resnet9000", FakeData(num_classes=10, input_shape=(3, 32, 32)))


def test_create_model_for_leaves_a_factory_taking_any_keyword_to_check_its_own(monkeypatch):
    from src.models import registry

    made = {}

    def factory(num_classes, in_channels, input_size, **options):
        made.update(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **options)
        return torch.nn.Identity()

    monkeypatch.setitem(registry.ModelRegistry._entries, "anything", factory)
    create_model_for("anything", FakeData(num_classes=2, input_shape=(1, 9, 9)), depth=3)
    assert made == {"num_classes": 2, "in_channels": 1, "input_size": 9, "depth": 3}
