"""Exponential moving average of the weights, the model that samples are drawn from."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `shadow`, a frozen copy of the network whose parameters trail the trained ones:
    shadow <- decay_n * shadow + (1 - decay_n) * params, with the warm-up
    decay_n = min(decay, (1 + n) / (10 + n)) after n updates, so early weights fade fast."""

    def __init__(self, model: nn.Module, decay: float = 0.999, update_every: int = 1, warmup: bool = True):
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.update_every, self.warmup = decay, update_every, warmup
        self.num_updates = 0
        self._pairs: tuple | None = None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after each optimiser step; only every `update_every`-th step does work."""
        if step % self.update_every:
            return
        decay = self.current_decay()
        if self._pairs is None or self._pairs[0] is not model:  # built once: a step is launch-bound
            self._pairs = (model, list(self.shadow.parameters()), [p.detach() for p in model.parameters()],
                           list(self.shadow.buffers()), list(model.buffers()))
        _, shadow_params, params, shadow_buffers, buffers = self._pairs
        torch._foreach_lerp_(shadow_params, params, 1.0 - decay)
        if buffers:
            torch._foreach_copy_(shadow_buffers, buffers)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
