"""StyleGAN2's FamilyTrainer: G, D, the EMA of G, two Adam optimisers, augmentation and the four
training phases of NVlabs stylegan2-ada-pytorch (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN"; "Training Generative Adversarial Networks with Limited Data"):

  G main   non-saturating loss on D(augment(G(z)))                         every step
  G reg    path-length regularisation (when --pl-weight > 0), eager, fp32  every pl_interval steps
  D main   logistic loss on D(augment(real)) and D(augment(G(z)))          every step
  D reg    R1 on real images, eager, fp32 (double backward)                every r1_interval steps

then the EMA of G (half-life g_ema_kimg thousand images, ramped up over the first images) and,
every ada_interval steps, ADA's p. Each phase zeroes the gradients, backpropagates and steps its
own optimiser, as the reference does. All randomness (latents, noise inputs, style-mixing cut-offs,
augmentation, path-length directions) is drawn from the step's generator, so N + M steps equal N
steps, a resume, then M steps, bit for bit.
"""
from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import Tensor

from difflab.families.base import StepContext
from difflab.families.stylegan2.augment import AdaptiveAugment, build_augment
from difflab.families.stylegan2.losses import (discriminator_loss, generator_loss, lazy_adam_hyperparameters,
                                               path_length_loss, path_lengths, r1_gamma_heuristic, r1_loss,
                                               r1_penalty)
from difflab.families.stylegan2.networks import (build_discriminator, build_generator, draw_integers, draw_normal,
                                                 draw_uniform)
from difflab.families.stylegan2.options import check_stylegan2_options
from difflab.training.checkpoint import optimizer_from_checkpoint, optimizer_to_checkpoint
from difflab.training.speed import compile_or_eager, optimizer_kernel

# Collapse detection (after_log). With R1 a healthy StyleGAN2 keeps |D(real) - D(fake)| within a
# few units (mean logits of about +-1 to +-4); a gap above 20 over a whole log interval means
# sigmoid(D) is saturated at 0/1: G's gradient has vanished and the run will not recover.
LOGIT_GAP_LIMIT = 20.0
# softplus(-D(G(z))) > 20 means D rejects every fake with probability 1 - 2e-9: the same failure
# seen from G's side (stuck loss), even where the real logits are not (yet) large.
LOSS_G_LIMIT = 20.0
PL_BATCH_SHRINK = 2  # the reference's path-length batch: half the batch
PL_DECAY = 0.01


class StyleGAN2Trainer:
    def __init__(self, config: Any, image_channels: int, device: torch.device | str):
        check_stylegan2_options(config)
        self.config = config
        self.device = torch.device(device)
        self.image_channels = int(image_channels)
        self.batch_size = int(config.batch_size)  # global: images per step over all processes
        with torch.random.fork_rng(devices=[]):  # initialisation depends only on the seed
            torch.manual_seed(int(config.seed))
            generator_net = build_generator(config, self.image_channels)
            discriminator_net = build_discriminator(config, self.image_channels)
        self.G = generator_net.to(self.device)          # the plain modules: state, EMA, eager passes
        self.D = discriminator_net.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_train, self.D_train = self.G, self.D     # prepared (DDP) modules, uncompiled
        self.G_main, self.D_main = self.G, self.D       # what the main passes call (maybe compiled)
        self.G_reg, self.D_reg = self.G, self.D         # what the regularisers call: eager, fp32

        self.r1_gamma = float(config.r1_gamma) or r1_gamma_heuristic(config.image_size, self.batch_size)
        self.r1_interval = int(config.r1_interval)
        self.pl_weight, self.pl_interval = float(config.pl_weight), int(config.pl_interval)
        self.style_mixing = float(config.style_mixing)
        betas = (float(config.adam_beta1), float(config.adam_beta2))
        g_lr, g_betas = lazy_adam_hyperparameters(config.g_lr, betas, self.pl_interval, self.pl_weight > 0)
        d_lr, d_betas = lazy_adam_hyperparameters(config.d_lr, betas, self.r1_interval, self.r1_gamma > 0)
        kernel = optimizer_kernel(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=g_lr, betas=g_betas, eps=1e-8, **kernel)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8, **kernel)

        self.augment_kind = config.augment
        self.augment = build_augment(config.augment, config, self.batch_size, self.device)
        self.ada_interval = int(config.ada_interval)
        self.pl_mean = torch.zeros([], device=self.device)
        self.last_r1 = torch.zeros([], device=self.device)
        self.last_pl = torch.zeros([], device=self.device)
        self.cur_nimg = 0
        self.compile_enabled = False  # decided by the core's --compile resolution, in prepare()
        self.world = 1  # processes; set in prepare()

    # ---- set-up ----------------------------------------------------------------------------------
    def prepare(self, prepare: Callable[..., Any], example_batch: Tensor, compile: bool = False,
                cuda_graphs: bool = False) -> str | None:
        """Place G and D for the devices; TF32 on CUDA; compile the main passes (`compile`: the core's
        --compile decision). R1 and path-length passes (double backward) always run on the
        uncompiled modules. CUDA graphs are not used: the lazy regularisers change the step's shape
        from step to step.

        Several processes: G and D are not wrapped in DistributedDataParallel. A GAN step updates
        one network through the other (G's loss runs through a frozen D), which DDP's reducer
        rejects ("parameters that were not used in producing loss"); as in NVlabs' training loop,
        each process instead all-reduces the gradients of the network it updates before each
        optimiser step (`_synchronise`). Initial weights agree because they depend on the seed only,
        so every process keeps identical G, D, G_ema and ADA p (whose statistics are all-reduced)."""
        # Only an explicit --compile on compiles the GAN: the main passes compile per batch size and
        # grad mode, and that cost has not been measured against the eager step yet, so --compile
        # auto stays eager here (the diffusion family compiles under auto).
        self.compile_enabled = compile and self.config.compile == "on"
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world = torch.distributed.get_world_size() if distributed else 1
        self.G_ema.to(self.device)
        self.G_train, self.D_train = self.G, self.D
        self.G_main, self.D_main = self.G_train, self.D_train
        self.G_reg, self.D_reg = self.G_train, self.D_train
        if self.compile_enabled:
            probe = torch.Generator(device=self.device).manual_seed(0)
            n = max(1, min(len(example_batch), 8))
            z = draw_normal([n, self.G.z_dim], probe, self.device)
            self.G_main = compile_or_eager(self.G_train, (z, self.G.sample_noise(n, probe, self.device)), True)
            images = self._as_float(example_batch[:n])
            self.D_main = compile_or_eager(self.D_train, (images,), True)
            self.G.zero_grad(set_to_none=True)
            self.D.zero_grad(set_to_none=True)
        return "G's and D's main passes" if self.compile_enabled else None

    def _synchronise(self, network: torch.nn.Module) -> None:
        """Average `network`'s gradients over the processes (one flat all-reduce); nothing on one."""
        if self.world == 1:
            return
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    # ---- one step ----------------------------------------------------------------------------------
    def train_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        generator, step = context.generator, context.step
        real = self._as_float(images)
        n = real.shape[0]

        # G main: make D call fakes real
        self._train_only(self.G, self.D)
        self.opt_g.zero_grad(set_to_none=True)
        with context.autocast():
            fake_logits = self._discriminate(self.D_main, self._generate(self.G_main, n, generator), generator)
            loss_g = generator_loss(fake_logits)
        context.backward(loss_g)
        self._synchronise(self.G)
        self.opt_g.step()

        # G reg: path-length regularisation, lazily
        if self.pl_weight > 0 and step % self.pl_interval == 0:
            self.opt_g.zero_grad(set_to_none=True)
            with self._full_precision():
                loss_pl = self._path_length_loss(max(1, n // PL_BATCH_SHRINK), generator)
            context.backward(loss_pl)
            self._synchronise(self.G)
            self.opt_g.step()

        # D main: real vs fake
        self._train_only(self.D, self.G)
        self.opt_d.zero_grad(set_to_none=True)
        with context.autocast():
            with torch.no_grad():
                fake = self._generate(self.G_main, n, generator)
            fake_logits = self._discriminate(self.D_main, fake, generator)
            real_logits = self._discriminate(self.D_main, real, generator)
            loss_d = discriminator_loss(real_logits, fake_logits)
        context.backward(loss_d)
        self._synchronise(self.D)
        self.opt_d.step()
        if isinstance(self.augment, AdaptiveAugment):
            self.augment.accumulate(real_logits)

        # D reg: R1 on real images, lazily
        if step % self.r1_interval == 0 and self.r1_gamma > 0:
            self.opt_d.zero_grad(set_to_none=True)
            with self._full_precision():
                real_input = real.detach().requires_grad_(True)
                penalty = r1_penalty(real_input, self._discriminate(self.D_reg, real_input, generator))
                loss_r1 = r1_loss(penalty, self.r1_gamma, self.r1_interval)
            context.backward(loss_r1)
            self._synchronise(self.D)
            self.opt_d.step()
            self.last_r1 = penalty.mean().detach()

        self.G.requires_grad_(True)
        self._update_ema()
        self.cur_nimg += self.batch_size
        if isinstance(self.augment, AdaptiveAugment) and step % self.ada_interval == self.ada_interval - 1:
            self.augment.adjust()

        real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
        logs = {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), "r1": self.last_r1.clone(),
                "aug_p": self.augment_p().clone(), "real_sign": real_logits.sign().mean(),
                "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}
        if self.pl_weight > 0:
            logs["pl"] = self.last_pl.clone()
        return logs

    def _generate(self, G, n: int, generator: torch.Generator, return_ws: bool = False):
        """G(z) for n fresh latents, noise inputs and (with --style-mixing) a mixing cut-off."""
        z = draw_normal([n, self.G.z_dim], generator, self.device)
        noise = self.G.sample_noise(n, generator, self.device)
        mixing = {}
        if self.style_mixing > 0:  # one cut-off per batch, as in the reference; drawn on the device
            num_ws = self.G.num_ws
            cutoff = draw_integers(1, num_ws, [], generator, self.device)
            mixed = draw_uniform([], generator, self.device) < self.style_mixing
            mixing = {"z_mix": draw_normal([n, self.G.z_dim], generator, self.device),
                      "mix_cutoff": torch.where(mixed, cutoff, torch.full_like(cutoff, num_ws))}
        return G(z, noise, update_w_avg=True, return_ws=return_ws, **mixing)

    def _discriminate(self, D, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.augment is not None:
            images = self.augment(images, generator)
        return D(images)

    def _path_length_loss(self, n: int, generator: torch.Generator) -> Tensor:
        images, ws = self._generate(self.G_reg, n, generator, return_ws=True)
        lengths = path_lengths(images, ws, generator)
        loss, new_mean = path_length_loss(lengths, self.pl_mean, self.pl_weight, self.pl_interval, PL_DECAY)
        self.pl_mean.copy_(new_mean)
        self.last_pl = (lengths - new_mean).square().mean().detach()
        return loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        """beta = 0.5 ** (batch / ema_nimg), ema_nimg = min(g_ema_kimg * 1000, cur_nimg * rampup)."""
        ema_nimg = self.config.g_ema_kimg * 1000
        if self.config.g_ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.cur_nimg * self.config.g_ema_rampup)
        beta = 0.5 ** (self.batch_size / ema_nimg) if ema_nimg > 0 else 0.0
        ema_params, params = list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()]
        if beta == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        for ema_buffer, buffer in zip(self.G_ema.buffers(), self.G.buffers()):
            ema_buffer.copy_(buffer)

    def _train_only(self, trained: torch.nn.Module, frozen: torch.nn.Module) -> None:
        """Gradients only for the network this phase updates (no wasted gradients of the other)."""
        trained.requires_grad_(True)
        frozen.requires_grad_(False)

    def _full_precision(self):
        """Regularisers run in fp32 even when the step runs under autocast: double backward in
        bf16 would make the penalties noisy."""
        if self.device.type in ("cuda", "cpu"):
            return torch.autocast(device_type=self.device.type, enabled=False)
        return nullcontext()

    def _as_float(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            return images.to(self.device).float() / 127.5 - 1
        return images.to(self.device).float()

    def augment_p(self) -> Tensor:
        if isinstance(self.augment, AdaptiveAugment):
            return self.augment.p
        return torch.zeros([], device=self.device)

    # ---- the loop's hooks ------------------------------------------------------------------------------
    def log_state(self) -> dict[str, float]:
        return {"images_seen": self.cur_nimg}

    def after_log(self, averages: dict[str, float], step: int) -> str | None:
        """A reason to stop: a non-finite logged value (divergence), or D and G saturated for the
        whole log interval (LOGIT_GAP_LIMIT, LOSS_G_LIMIT). ADA adapts inside train_step instead."""
        for name, value in averages.items():
            if not math.isfinite(value):
                return f"StyleGAN2 diverged at step {step}: {name} is {value}"
        gap = averages.get("d_real", 0.0) - averages.get("d_fake", 0.0)
        if abs(gap) > LOGIT_GAP_LIMIT:
            return (f"StyleGAN2 collapsed at step {step}: D's mean logits on real and fake images differ by "
                    f"{gap:.1f} (> {LOGIT_GAP_LIMIT:g}) over the whole log interval, so its sigmoid is saturated "
                    "and G gets no gradient; try a larger R1 gamma (r1_gamma), augmentation or a lower D learning "
                    "rate (d_lr)")
        if averages.get("loss_g", 0.0) > LOSS_G_LIMIT:
            return (f"StyleGAN2 collapsed at step {step}: G's loss averaged {averages['loss_g']:.1f} "
                    f"(> {LOSS_G_LIMIT:g}): D rejects every fake with certainty")
        return None

    def state(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        opt_g_tensors, opt_g_meta = optimizer_to_checkpoint(self.opt_g)
        opt_d_tensors, opt_d_meta = optimizer_to_checkpoint(self.opt_d)
        augment = self.augment.state() if isinstance(self.augment, AdaptiveAugment) else {}
        tensors = {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                   "opt_g": opt_g_tensors, "opt_d": opt_d_tensors, "augment": augment,
                   "regularisers": {"pl_mean": self.pl_mean, "last_r1": self.last_r1, "last_pl": self.last_pl}}
        meta = {"family": "stylegan2", "image_channels": self.image_channels, "cur_nimg": self.cur_nimg,
                "opt_g": opt_g_meta, "opt_d": opt_d_meta, "r1_gamma": self.r1_gamma,
                "augment": self.augment_kind, "aug_p": float(self.augment_p())}  # aug_p: for people; "augment" is exact
        return tensors, meta

    def load_state(self, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]) -> None:
        self.G.load_state_dict(tensors["G"])
        self.D.load_state_dict(tensors["D"])
        self.G_ema.load_state_dict(tensors["G_ema"])
        optimizer_from_checkpoint(self.opt_g, tensors.get("opt_g", {}), meta["opt_g"])
        optimizer_from_checkpoint(self.opt_d, tensors.get("opt_d", {}), meta["opt_d"])
        if isinstance(self.augment, AdaptiveAugment) and tensors.get("augment"):
            self.augment.load_state(tensors["augment"])
        regularisers = tensors.get("regularisers", {})
        for name in ("pl_mean", "last_r1", "last_pl"):
            if name in regularisers:
                getattr(self, name).copy_(regularisers[name])
        self.cur_nimg = int(meta["cur_nimg"])

    @torch.no_grad()
    def preview(self, count: int, seed: int, steps: int | None = None, sampler: str | None = None) -> Tensor:
        """`count` images in [-1, 1] from G_ema at psi 1; the same seed draws the same latents and noise.
        (`steps` and `sampler` are for families with a sampler; a GAN makes an image in one pass.)"""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        z = draw_normal([count, self.G.z_dim], generator, self.device)
        noise = self.G_ema.sample_noise(count, generator, self.device)
        with self._full_precision():
            return self.G_ema(z, noise).float().clamp(-1, 1)
