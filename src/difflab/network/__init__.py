"""The denoising network: a DDPM / improved-diffusion style U-Net."""
from difflab.network.config import UNetConfig, parse_int_tuple
from difflab.network.flops import count_flops
from difflab.network.presets import PRESETS, preset
from difflab.network.unet import UNet

__all__ = ["PRESETS", "UNet", "UNetConfig", "count_flops", "parse_int_tuple", "preset"]
