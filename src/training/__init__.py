"""Training: the Trainer loop and the helpers it drives.

``Trainer`` (trainer.py) runs the loop; ``CheckpointManager`` (checkpoint.py) owns the
checkpoint files; ``ExperimentManager`` (experiment.py) owns the experiment directories;
``MetricsTracker`` (metrics.py) the numbers; history.py the log; plots.py the curves;
early_stopping.py the patience rule; tb_logger.py the optional TensorBoard event files
(``TensorBoardLogger``); resume.py decides where a resume or fork starts and what is left
to do. A whole run from a configuration is built one layer up, in ``src/run/``.
"""

from .checkpoint import CheckpointCorruptError, CheckpointError, CheckpointManager, CheckpointSaveError
from .early_stopping import EarlyStopping
from .experiment import ExperimentError, ExperimentManager
from .metrics import MetricsTracker
from .interrupts import TrainingInterrupted
from .tb_logger import TensorBoardLogger
from .trainer import Trainer

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointSaveError",
    "EarlyStopping",
    "ExperimentError",
    "ExperimentManager",
    "MetricsTracker",
    "TensorBoardLogger",
    "Trainer",
    "TrainingInterrupted",
]
