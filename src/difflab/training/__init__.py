"""Training: the loop, EMA, checkpoints and the metrics log."""
from difflab.training.loop import NonFiniteLossError, TrainingCollapsed, TrainingStopped, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainResult", "TrainingCollapsed", "TrainingStopped", "train"]
