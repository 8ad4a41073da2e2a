"""Configuration keys shared by the run builder and the resume/fork decisions."""

# Configuration keys that change what the data pipeline produces; a fork that changes
# one of them restarts the data order instead of continuing the parent's.
DATA_KEYS = ("dataset", "batch_size", "seed", "augment", "augmentation", "reapply_transforms", "dataset_options")
