"""The old home of ``run_training``: its steps now live in ``src/run/`` (plan, build,
apply, run); the names are kept here for the code and tests that import them."""

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
