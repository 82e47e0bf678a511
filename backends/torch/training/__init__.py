"""Training: the run options (config), the loop, data order, distributed set-up and checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, read_meta, save_checkpoint
from .config import QUICKSTART_TRAIN, RUNTIME_OPTIONS, TrainConfig, model_config, resolve_config, resolve_run_config
from .loop import TrainingDiverged, TrainResult, read_metrics, train

__all__ = [
    "CheckpointError", "load_checkpoint", "load_model", "read_meta", "save_checkpoint",
    "QUICKSTART_TRAIN", "RUNTIME_OPTIONS", "TrainConfig", "model_config", "resolve_config", "resolve_run_config",
    "TrainingDiverged", "TrainResult", "read_metrics", "train",
]
