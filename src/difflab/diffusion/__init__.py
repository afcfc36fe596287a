"""Diffusion math: schedules, the forward process, objectives, the loss, one reverse step."""
from difflab.diffusion.denoiser import Denoiser, make_denoiser, model_predictions, model_time, reverse_step
from difflab.diffusion.losses import LOSS_WEIGHTINGS, DiffusionLoss, min_snr_weight
from difflab.diffusion.objectives import CLIPPING, OBJECTIVES, Predictions, clip_x0, predictions_from_output
from difflab.diffusion.process import DiffusionSchedule, q_posterior, q_sample
from difflab.diffusion.schedules import BETA_SCHEDULES, make_beta_schedule

__all__ = [
    "BETA_SCHEDULES", "CLIPPING", "LOSS_WEIGHTINGS", "OBJECTIVES", "Denoiser", "DiffusionLoss",
    "DiffusionSchedule", "Predictions", "clip_x0", "make_beta_schedule", "make_denoiser", "min_snr_weight",
    "model_predictions", "model_time", "predictions_from_output", "q_posterior", "q_sample", "reverse_step",
]
