"""The denoising network: a DDPM / improved-diffusion style U-Net."""
from difflab.config import parse_int_tuple
from difflab.network.config import UNetConfig, auto_attn_resolutions, auto_dim_mults
from difflab.network.flops import count_flops
from difflab.network.presets import PRESETS, preset, preset_options
from difflab.network.unet import UNet

__all__ = ["PRESETS", "UNet", "UNetConfig", "auto_attn_resolutions", "auto_dim_mults", "count_flops",
           "parse_int_tuple", "preset", "preset_options"]
