"""The old home of ``run_training`` (``src.training.run.run_training``, documented before
``src/run/`` existed): its steps now live in ``src/run/`` (plan, build, apply, run). Kept
for code that imports the old name; the project itself imports ``src.run``. The one
upward import of ``src/training`` (allowed by name in pyproject.toml's layers contract)."""

from ..run.build import (  # noqa: F401
    Components,
    _create,
    _prepare_trainer,
    build_components,
    dry_forward,
)
from ..run.plan import (  # noqa: F401
    StartPlan,
    _read_config,
    check_runs_dir,
    make_plan,
    resolve_config,
)
from ..run.run import _run_training, _silent, run_training  # noqa: F401
