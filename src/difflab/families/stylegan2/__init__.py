"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") with
ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data") or
DiffAugment (Zhao et al. 2020): a GAN baseline family for difflab, in plain PyTorch."""
from difflab.families.base import Family
from difflab.families.stylegan2.generator import StyleGAN2Generator, load_stylegan2_generator
from difflab.families.stylegan2.options import STYLEGAN2_MNIST, StyleGAN2Options, check_stylegan2_options
from difflab.families.stylegan2.trainer import StyleGAN2Trainer

FAMILY = Family(
    name="stylegan2",
    help="StyleGAN2 GAN baseline (skip G, residual D, R1, EMA of G; ADA or DiffAugment), after "
         "NVlabs stylegan2-ada-pytorch",
    options=StyleGAN2Options,
    trainer=StyleGAN2Trainer,
    load_generator=load_stylegan2_generator,
    weights=("ema", "model"),
    check=check_stylegan2_options,
    prior_kind="gan",
)

__all__ = ["FAMILY", "STYLEGAN2_MNIST", "StyleGAN2Generator", "StyleGAN2Options", "StyleGAN2Trainer",
           "check_stylegan2_options", "load_stylegan2_generator"]
