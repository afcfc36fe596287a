"""U-Net hyper-parameters, checked up front so a bad CLI option fails before any work starts."""
from __future__ import annotations

from dataclasses import dataclass

from difflab.errors import ConfigError


def parse_int_tuple(text: str, option: str) -> tuple[int, ...]:
    """Parse a comma-separated CLI value such as "1,2,4" into (1, 2, 4).

    An empty string gives () (e.g. `--attn-resolutions ""` turns attention off outside
    the middle block). Anything else that is not a plain list of integers is a ConfigError
    naming `option`.
    """
    if not text.strip():
        return ()
    items = [item.strip() for item in text.split(",")]
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ConfigError(
            f"{option} expects comma-separated integers such as 1,2,4; got {text!r}"
        ) from None


def _format_ints(values: tuple[int, ...]) -> str:
    return ",".join(str(value) for value in values)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the DDPM / improved-diffusion U-Net (see `difflab.network.unet`)."""

    image_channels: int = 3
    base_channels: int = 64  # --channels: width of the first level
    dim_mults: tuple[int, ...] = (1, 2, 4)  # --dim-mults: width multiplier per level
    num_res_blocks: int = 2  # --res-blocks: residual blocks per encoder level
    attn_resolutions: tuple[int, ...] = (16,)  # --attn-resolutions: feature-map sizes with self-attention
    attn_head_channels: int = 64  # channels per attention head
    dropout: float = 0.0  # --dropout
    image_size: int = 64  # --image-size

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding fed to every residual block (4x, as in DDPM)."""
        return 4 * self.base_channels

    @property
    def num_levels(self) -> int:
        return len(self.dim_mults)

    @property
    def downsampling_factor(self) -> int:
        """Total spatial reduction: each level but the last halves the feature map."""
        return 2 ** (self.num_levels - 1)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * mult for mult in self.dim_mults)

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Feature-map side length at each level, e.g. (64, 32, 16) for 64x64 and dim_mults 1,2,4."""
        return tuple(self.image_size // 2**level for level in range(self.num_levels))

    def validate(self) -> None:
        """Raise ConfigError, naming the CLI option, for any value the U-Net cannot be built with."""
        if self.image_channels not in (1, 3):
            raise ConfigError(
                f"image channels must be 1 (grayscale) or 3 (RGB), got {self.image_channels}"
            )
        if self.base_channels <= 0:
            raise ConfigError(f"--channels must be a positive integer, got {self.base_channels}")
        if not self.dim_mults:
            raise ConfigError("--dim-mults must list at least one level, e.g. 1,2,4")
        if any(mult <= 0 for mult in self.dim_mults):
            raise ConfigError(
                f"--dim-mults {_format_ints(self.dim_mults)} must contain only positive integers"
            )
        if self.num_res_blocks <= 0:
            raise ConfigError(f"--res-blocks must be a positive integer, got {self.num_res_blocks}")
        if self.attn_head_channels <= 0:
            raise ConfigError(
                f"--attn-head-channels must be a positive integer, got {self.attn_head_channels}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        self._validate_image_size()
        self._validate_attention()

    def _validate_image_size(self) -> None:
        factor = self.downsampling_factor
        if self.image_size <= 0:
            raise ConfigError(f"--image-size must be a positive integer, got {self.image_size}")
        if self.image_size % factor:
            below = self.image_size // factor * factor
            above = below + factor
            suggestion = f"{below} or {above}" if below > 0 else f"{above}"
            raise ConfigError(
                f"--image-size {self.image_size} is not divisible by {factor}, the U-Net's "
                f"downsampling factor for --dim-mults {_format_ints(self.dim_mults)} "
                f"(use {suggestion}, or fewer levels)"
            )

    def _validate_attention(self) -> None:
        present = self.level_resolutions
        missing = [size for size in self.attn_resolutions if size not in present]
        if missing:
            raise ConfigError(
                f"--attn-resolutions {_format_ints(self.attn_resolutions)}: feature-map size "
                f"{_format_ints(tuple(missing))} does not occur; with --image-size {self.image_size} "
                f"and --dim-mults {_format_ints(self.dim_mults)} the sizes are {_format_ints(present)}"
            )
        # Attention also runs in the middle block, at the lowest level's width.
        attended = {self.level_channels[-1]}
        attended |= {
            channels
            for channels, size in zip(self.level_channels, present)
            if size in self.attn_resolutions
        }
        for channels in sorted(attended):
            if channels > self.attn_head_channels and channels % self.attn_head_channels:
                raise ConfigError(
                    f"attention width {channels} (from --channels {self.base_channels} and "
                    f"--dim-mults {_format_ints(self.dim_mults)}) is not a multiple of "
                    f"--attn-head-channels {self.attn_head_channels}"
                )
