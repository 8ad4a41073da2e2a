"""exptrain: organised, resumable, exactly reproducible PyTorch training.

The import package is ``src`` (fixed by the specification): ``src.datasets``,
``src.models``, ``src.training`` and ``src.utils``.
"""

__version__ = "0.1.0"
