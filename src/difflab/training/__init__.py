"""Training: the loop, EMA, checkpoints and the metrics log."""
from difflab.training.loop import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainResult", "train"]
