import pytest

from src.registry import Registry


def test_register_create_and_names():
    registry = Registry("widget")

    @registry.register("b")
    def make_b(size=1):
        return ("b", size)

    registry.register("a", lambda: "a")
    assert registry.names() == ["a", "b"]
    assert registry.create("b", size=3) == ("b", 3)
    assert registry.create("b", size=None) == ("b", 1), "None kwargs keep the factory's defaults"
    assert "a" in registry and "c" not in registry


def test_unknown_name_lists_known_names():
    registry = Registry("widget")
    registry.register("beta", lambda: 1)
    registry.register("alpha", lambda: 2)
    with pytest.raises(KeyError, match=r"Unknown widget 'gamma'; choose one of: alpha, beta"):
        registry.create("gamma")


def test_duplicate_registration_is_an_error():
    registry = Registry("widget")
    registry.register("a", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", lambda: 2)


def test_builtin_registries_are_populated():
    from src.datasets import DatasetRegistry
    from src.models import ModelRegistry

    assert {"mnist", "fashion_mnist", "mnist-sample", "synthetic"} <= set(DatasetRegistry.names())
    assert {"mynet", "mlp", "lenet5"} <= set(ModelRegistry.names())
