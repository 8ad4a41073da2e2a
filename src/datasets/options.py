"""Checks of the options shared by the downloadable data sets (the generic argument checks
are in ``src/checks.py``, shared with the models)."""

from __future__ import annotations

from typing import Any

from ..checks import check_bool
from ..errors import ConfigError


def check_download_options(owner: str, download: Any, progress: Any, mirrors: Any, example: str):
    """``(download, progress, mirrors)`` of a downloadable data set, checked: two bools and
    ``None`` or a non-empty list of base URLs (``example`` is shown in the message)."""
    download = check_bool(download, owner, "download", flag="--dataset-option")
    progress = check_bool(progress, owner, "progress", flag="--dataset-option")
    if mirrors is not None and (
        not isinstance(mirrors, (list, tuple))
        or not mirrors
        or not all(isinstance(url, str) and url for url in mirrors)
    ):
        raise ConfigError(
            f"--dataset-option mirrors for {owner} must be a non-empty list of base URLs "
            f'such as ["{example}"], got {mirrors!r}.'
        )
    return download, progress, mirrors
