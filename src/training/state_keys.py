"""The names of the entries of a checkpoint, in one place.

A checkpoint is a dict that ``torch.load(path, weights_only=True)`` reads back: the
specified entries (epoch, model and optimizer state, loss, accuracy, model config) plus
the union of every stateful part's ``state_dict()`` under the keys below. Bump
``FORMAT_VERSION`` in checkpoint.py when their meaning changes.
"""

FORMAT_VERSION = "format_version"  # int
VERSIONS = "versions"  # library versions and git commit
EPOCH = "epoch"  # epochs completed
GLOBAL_STEP = "global_step"  # batches trained in the whole run
MID_EPOCH = "mid_epoch"  # True when saved inside an epoch (after a signal)
MODEL = "model_state_dict"
MODEL_CONFIG = "model_config"  # enough to rebuild the model: build_model(config)
OPTIMIZER = "optimizer_state_dict"
SCHEDULER = "scheduler_state_dict"
SCALER = "scaler_state_dict"  # fp16 grad scaler, else None
LOSS = "loss"  # validation loss of the epoch (train loss so far mid-epoch)
ACCURACY = "accuracy"
EARLY_STOPPING = "early_stopping"
CHECKPOINT_MANAGER = "checkpoint_manager"  # the best accuracy so far
HISTORY = "history"
RNG = "rng_state"  # Python, NumPy, torch CPU (and CUDA)
TRAIN_LOADER = "train_loader"  # epoch and position of the data order
TRAIN_TRACKER = "train_tracker"  # partial training metrics of an interrupted epoch
DATASET = "dataset"  # the live augmentation draw (with --reapply-transforms)
CONFIG = "config"  # the run configuration
WORLD_SIZE = "world_size"  # processes of the run (1 without torchrun)
STARTS = "starts"  # where the run was resumed or forked: [{kind, epoch, global_step, mid_epoch}]
RANKS = "ranks"  # per rank {rng_state, train_tracker} under torchrun, else None
EMA = "ema_state_dict"  # --ema: decay, update count, the trained weights (model = the average)
WARMUP = "warmup"  # --warmup-epochs: optimizer steps counted
EPOCH_LEARNING_RATE = "epoch_learning_rate"  # mid-epoch: the rate at the epoch's start (logged)
