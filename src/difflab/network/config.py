"""U-Net hyper-parameters, checked up front so a bad option fails before any work starts, and the
rule that sizes the U-Net to the image (`--dim-mults auto`, `--attn-resolutions auto`).

The size rule, for an image of S px:

* Levels: halve the feature map while it is larger than 16 px, and at least twice (three levels, down
  to S/4) while it halves evenly and stays >= 4 px; never past an odd size. So 64 -> 64/32/16 (the
  network difflab always had at 64 px), 28 -> 28/14/7, 32 -> 32/16/8, 96 -> 96/48/24/12,
  128 -> 128/64/32/16, 256 -> 256/128/64/32/16, and 30 -> 30/15.
* Widths: 1, 2, 4 times --channels at the lowest three levels, 1 at any level above them
  (1,2,4 / 1,1,2,4 / 1,1,1,2,4): the extra high-resolution levels stay narrow, where a convolution
  costs the most, as in DDPM's 256 px model (1,1,2,2,4,4).
* Attention: at the level of S/4 (16 px at 64, as before; 7 at 28), but on no map larger than 32 px
  (1,024 tokens: full attention's cost grows with the square of the tokens, and S/4 at 256 px
  would be 4,096), so the first level at or below min(S/4, 32): 32 px at both 128 and 256.
  The middle block attends at the lowest level whatever the option says.

The resolved values are what a run saves, so a run folder never depends on this rule.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from difflab.config import check_declared_range, declaration, format_int_tuple, parse_int_tuple
from difflab.errors import OPTION, ConfigError

LOWEST_MAP_PX = 16  # levels halve the image while the map is larger than this ...
MIN_LEVELS = 3  # ... and keep at least this many levels where the size halves evenly
SMALLEST_MAP_PX = 4  # ... down to maps of at least this size
ATTENTION_FRACTION = 4  # attention at 1/4 of the image size ...
MAX_ATTENTION_PX = 32  # ... on maps of at most 32 x 32 = 1,024 tokens

# Each UNetConfig field and the run option (difflab.config.TrainConfig) it is set from. Errors name
# the option, the name a user sets; its declaration there holds the field's range.
OPTION_OF_FIELD = {
    "image_channels": "image_channels", "base_channels": "channels", "dim_mults": "dim_mults",
    "num_res_blocks": "res_blocks", "attn_resolutions": "attn_resolutions",
    "attn_head_channels": "attn_head_channels", "dropout": "dropout", "image_size": "image_size",
}


def auto_level_sizes(image_size: int) -> tuple[int, ...]:
    """The feature-map size of each U-Net level for `--dim-mults auto` (the module's size rule)."""
    sizes = [image_size]
    while (sizes[-1] % 2 == 0 and sizes[-1] // 2 >= SMALLEST_MAP_PX
           and (sizes[-1] > LOWEST_MAP_PX or len(sizes) < MIN_LEVELS)):
        sizes.append(sizes[-1] // 2)
    return tuple(sizes)


def auto_dim_mults(image_size: int) -> tuple[int, ...]:
    """`--dim-mults auto`: 1,2,4 at the lowest three levels, 1 above them (1,2,4 at 64 px)."""
    levels = len(auto_level_sizes(image_size))
    return (1,) * (levels - 3) + (1, 2, 4) if levels >= 3 else (1, 2)[:levels]


def auto_attn_resolutions(image_size: int, dim_mults: tuple[int, ...]) -> tuple[int, ...]:
    """`--attn-resolutions auto`: the first level at or below a quarter of the image size and at
    most 32 px (16 at 64 px); none when no level is that small (the middle block still attends)."""
    sizes = [image_size // 2**level for level in range(len(dim_mults))]
    return tuple(size for size in sizes
                 if size * ATTENTION_FRACTION <= image_size and size <= MAX_ATTENTION_PX)[:1]


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the DDPM / improved-diffusion U-Net (see `difflab.network.unet`).

    The defaults are the 64 px network; `UNetConfig.for_image_size(S)` sizes one to S px by the
    module's rule. validate()'s errors name the run options the fields are set from
    (`channels` for base_channels, `res_blocks` for num_res_blocks: OPTION_OF_FIELD)."""

    image_channels: int = 3
    base_channels: int = 64  # channels: width of the first level
    dim_mults: tuple[int, ...] = (1, 2, 4)  # dim_mults: width multiplier per level
    num_res_blocks: int = 2  # res_blocks: residual blocks per encoder level
    attn_resolutions: tuple[int, ...] = (16,)  # attn_resolutions: feature-map sizes with self-attention
    attn_head_channels: int = 64  # channels per attention head
    dropout: float = 0.0
    image_size: int = 64

    @classmethod
    def for_image_size(cls, image_size: int, **fields: Any) -> "UNetConfig":
        """The U-Net for `image_size` px by the size rule; `fields` (e.g. base_channels=32) win."""
        dim_mults = tuple(fields.pop("dim_mults", auto_dim_mults(image_size)))
        attention = tuple(fields.pop("attn_resolutions", auto_attn_resolutions(image_size, dim_mults)))
        return cls(image_size=image_size, dim_mults=dim_mults, attn_resolutions=attention, **fields)

    @classmethod
    def from_options(cls, options: Any, image_channels: int) -> "UNetConfig":
        """The U-Net a run's options (a TrainConfig) describe, `auto` values resolved."""
        return cls(
            image_channels=image_channels,
            base_channels=options.channels,
            dim_mults=options.dim_mults_tuple(),
            num_res_blocks=options.res_blocks,
            attn_resolutions=options.attn_resolutions_tuple(),
            attn_head_channels=options.attn_head_channels,
            dropout=options.dropout,
            image_size=options.image_size,
        )

    def to_options(self) -> dict[str, Any]:
        """The run options that build this U-Net (image channels aside: the data decides them)."""
        values = {OPTION_OF_FIELD[f.name]: getattr(self, f.name) for f in fields(self) if f.name != "image_channels"}
        values["dim_mults"] = format_int_tuple(self.dim_mults)
        values["attn_resolutions"] = format_int_tuple(self.attn_resolutions)
        return values

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
        """Raise ConfigError, naming the option, for any value the U-Net cannot be built with. The
        ranges are the options' declarations (difflab.config), checked here too for direct use."""
        if self.image_channels not in (1, 3):
            raise ConfigError(f"{OPTION} must be 1 or 3 (grayscale or RGB image channels); got {self.image_channels!r}",
                              option="image_channels")
        for name in ("base_channels", "num_res_blocks", "attn_head_channels", "dropout", "image_size"):
            option = OPTION_OF_FIELD[name]
            check_declared_range(option, getattr(self, name), declaration(option))
        parse_int_tuple(self.dim_mults, "dim_mults", allow_empty=False)
        parse_int_tuple(self.attn_resolutions, "attn_resolutions", allow_empty=True)
        self._validate_image_size()
        self._validate_attention()

    def _validate_image_size(self) -> None:
        factor = self.downsampling_factor
        if self.image_size % factor:
            below = self.image_size // factor * factor
            above = below + factor
            suggestion = f"{below} or {above}" if below > 0 else f"{above}"
            raise ConfigError(
                f"{OPTION} {self.image_size} is not divisible by {factor}, the U-Net's downsampling factor for "
                f"{{option:dim_mults}} {format_int_tuple(self.dim_mults)} (use {suggestion}, or fewer levels)",
                option="image_size")

    def _validate_attention(self) -> None:
        present = self.level_resolutions
        missing = [size for size in self.attn_resolutions if size not in present]
        if missing:
            raise ConfigError(
                f"{OPTION} {format_int_tuple(self.attn_resolutions)}: feature-map size "
                f"{format_int_tuple(missing)} does not occur; with {{option:image_size}} {self.image_size} "
                f"and {{option:dim_mults}} {format_int_tuple(self.dim_mults)} the sizes are "
                f"{format_int_tuple(present)}", option="attn_resolutions")
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
                    f"attention width {channels} (from {{option:channels}} {self.base_channels} and "
                    f"{{option:dim_mults}} {format_int_tuple(self.dim_mults)}) is not a multiple of "
                    f"{OPTION} {self.attn_head_channels}", option="attn_head_channels")
