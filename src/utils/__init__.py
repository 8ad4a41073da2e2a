"""Small shared helpers: device choice, seeding and RNG state, atomic file writes."""

from .device import get_device
from .io import atomic_write_bytes, atomic_write_text, fsync_directory
from .seed import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "get_device",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_directory",
    "capture_rng_state",
    "restore_rng_state",
    "seed_everything",
]
