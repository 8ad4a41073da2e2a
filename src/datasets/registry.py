"""The dataset registry (its own module so dataset modules can import it without cycles)."""

from ..registry import Registry

DatasetRegistry = Registry("dataset")
