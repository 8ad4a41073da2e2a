"""The one generic name -> factory registry, shared by datasets and models."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import UnknownNameError


class Registry:
    """Maps names to factories (classes or functions).

    Example::

        MODELS = Registry("model")

        @MODELS.register("mlp")
        class MLP(nn.Module): ...

        model = MODELS.create("mlp", num_classes=10)
    """

    def __init__(self, kind: str, sort_names: bool = True):
        self.kind = kind
        self.sort_names = sort_names  # False: names() in registration order (built-ins first)
        self._entries: Dict[str, Callable[..., Any]] = {}
        self._metadata: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, factory: Optional[Callable[..., Any]] = None, **metadata: Any):
        """Register ``factory`` under ``name``; usable as a decorator. ``metadata``: what
        the callers need to know about the entry besides how to build it (read with
        ``info``; e.g. a scheduler's ``per_step``).

        Raises:
            ValueError: if ``name`` is already registered (a silent overwrite would
                make which implementation runs depend on import order).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"The {self.kind} name {name!r} is already registered.")
            self._entries[name] = obj
            self._metadata[name] = dict(metadata)
            return obj

        return decorator(factory) if factory is not None else decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory for ``name``.

        Raises:
            KeyError: naming the unknown value and listing the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def info(self, name: str) -> Dict[str, Any]:
        """The metadata ``name`` was registered with.

        Raises:
            KeyError: naming the unknown value and listing the known names.
        """
        self.get(name)
        return self._metadata.get(name, {})

    def items(self) -> List[Tuple[str, Dict[str, Any]]]:
        """``(name, metadata)`` of every entry, in ``names()`` order."""
        return [(name, self._metadata.get(name, {})) for name in self.names()]

    def unknown_message(self, name: Any) -> str:
        return f"Unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}."

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; kwargs that are None are dropped so unset
        options keep the factory's own defaults."""
        factory = self.get(name)
        arguments = {k: v for k, v in kwargs.items() if v is not None}
        created = factory(**arguments)
        try:  # how it was made: lets a run built in Python be rebuilt from its config
            created.origin = {"name": name, **arguments}
        except AttributeError:
            pass
        return created

    def names(self) -> List[str]:
        return sorted(self._entries) if self.sort_names else list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
