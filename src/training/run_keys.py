"""Configuration keys shared by the run builder and the resume/fork decisions (generated
from ``RunConfig``'s field metadata, ``src/config.py``)."""

from ..config import DATA_KEYS

__all__ = ["DATA_KEYS"]
