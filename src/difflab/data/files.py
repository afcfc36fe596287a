"""Finding and decoding image files in folders and zip archives.

A zip is read member by member without unpacking, so a 50k-image archive
needs no extra disk space and opens in a fraction of a second.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageOps

from difflab.data.modes import CHANNEL_MODES, to_mode
from difflab.data.parallel import thread_map
from difflab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Zip-bomb guards, checked on a member's declared sizes before a byte is decompressed (zipfile
# stops at the declared size, so a member cannot expand beyond it). No real image file is
# near 256 MiB; Pillow's decompression-bomb limit then covers the pixels.
MAX_IMAGE_FILE_BYTES = 256 * 2**20
# Compression ratio above which a member larger than MIN_BOMB_CHECK_BYTES is refused: JPEG and
# PNG barely compress further (ratios near 1); a 3 GiB member in 14 MB is ~230x.
MAX_COMPRESSION_RATIO = 100
MIN_BOMB_CHECK_BYTES = 8 * 2**20

# What a broken, truncated or mislabelled file raises while PIL decodes it.
# Anything else is a bug in difflab and is left to propagate.
DECODE_ERRORS = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # some PIL plugins report malformed headers this way
    EOFError,
    struct.error,
    zipfile.BadZipFile,
    Image.DecompressionBombError,
)

Decoded = TypeVar("Decoded")
ZipCache = dict[tuple[str, int], zipfile.ZipFile]
# Open archives, keyed by (path, process id): a DataLoader worker forked from
# the main process must open its own handle instead of sharing a file offset.
_OPEN_ARCHIVES: ZipCache = {}


@dataclass(frozen=True)
class ImageRef:
    """One image: a file on disk (container None) or member `name` of zip `container`."""

    container: str | None
    name: str

    def __str__(self) -> str:
        if self.container is None:
            return self.name
        return f"{Path(self.container).name}:{self.name}"


def list_images(source: str | Path) -> list[ImageRef]:
    """All images in a folder (recursive), a .zip archive, or a single image file, sorted."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"image source {str(path)!r} does not exist; {_expected()}")
    if path.is_dir():
        refs = _list_folder(path)
    elif zipfile.is_zipfile(path):
        refs = _list_zip(path)
    elif _is_image_name(path.name):
        refs = [ImageRef(None, str(path))]
    else:
        raise DataError(f"{str(path)!r} is neither a folder, a .zip archive nor an image; {_expected()}")
    if not refs:
        raise DataError(f"no images found in {str(path)!r}; {_expected()}")
    return refs


def read_image(ref: ImageRef, zip_cache: ZipCache | None = None, min_size: int | None = None) -> Image.Image:
    """Decode one image completely, so a truncated file fails here and not mid-training.

    `min_size` lets the JPEG decoder scale by 1/2 to 1/8 while decoding, keeping
    both sides at least `min_size`: a phone photo bound for 64 px then decodes
    many times faster, and Lanczos still does the final resize.
    """
    img = Image.open(io.BytesIO(read_bytes(ref, zip_cache)))
    if min_size is not None:
        img.draft(img.mode, (min_size, min_size))
    img.load()
    # Phone photos store their rotation as metadata; apply it so faces stand upright.
    ImageOps.exif_transpose(img, in_place=True)
    return img


def read_bytes(ref: ImageRef, zip_cache: ZipCache | None = None) -> bytes:
    """The encoded file contents, from disk or from the (cached, open) archive."""
    if ref.container is None:
        size = os.stat(ref.name).st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise ValueError(f"{size / 2**20:,.0f} MiB is too large for an image file "
                             f"(limit {MAX_IMAGE_FILE_BYTES // 2**20} MiB); skipped")
        return Path(ref.name).read_bytes()
    archive = _open_archive(ref.container, zip_cache)
    check_zip_member(archive.getinfo(ref.name))
    return archive.read(ref.name)


def check_zip_member(info: zipfile.ZipInfo) -> None:
    """ValueError (a decode error: the member is reported and skipped) when a zip member declares
    an uncompressed size or a compression ratio no image has: a zip bomb, or a mislabelled file."""
    declared, packed = info.file_size, max(info.compress_size, 1)
    if declared > MAX_IMAGE_FILE_BYTES:
        raise ValueError(f"zip member declares {declared / 2**20:,.0f} MiB uncompressed (limit "
                         f"{MAX_IMAGE_FILE_BYTES // 2**20} MiB for an image); skipped unread as a possible zip bomb")
    if declared > MIN_BOMB_CHECK_BYTES and declared / packed > MAX_COMPRESSION_RATIO:
        raise ValueError(f"zip member expands {declared / packed:,.0f}-fold ({packed:,} -> {declared:,} bytes; "
                         f"images compress at most ~{MAX_COMPRESSION_RATIO}-fold); skipped unread as a possible "
                         "zip bomb")


def try_read_image(ref: ImageRef, mode: str | None = None) -> tuple[Image.Image | None, str | None]:
    """`(image, None)` or `(None, reason)`: for scans that must survive bad files."""

    def read(ref: ImageRef) -> Image.Image:
        img = read_image(ref)
        return img if mode is None else to_mode(img, _channels_of(mode))

    return attempt_decode(read, ref)


def attempt_decode(decode: Callable[[ImageRef], Decoded], ref: ImageRef) -> tuple[Decoded | None, str | None]:
    """`(decode(ref), None)`, or `(None, reason)` when the file is broken or not an image."""
    try:
        return decode(ref), None
    except DECODE_ERRORS as error:
        return None, f"{type(error).__name__}: {error}"


def iter_images(
    refs: Iterable[ImageRef],
    mode: str | None = None,
    workers: int | None = None,
    bad_files: list[tuple[str, str]] | None = None,
) -> Iterator[tuple[ImageRef, Image.Image | None]]:
    """Stream `(ref, image)` in order, decoding on a thread pool.

    `mode` is "L", "RGB" or None (as stored). An unreadable file yields
    `(ref, None)` and, when `bad_files` is given, appends `(label, reason)` to it,
    so metrics code can walk 50k files without one bad file stopping it.
    """
    if mode is not None:
        _channels_of(mode)  # fail on a bad mode before starting any threads

    def decode(ref: ImageRef) -> tuple[ImageRef, Image.Image | None, str | None]:
        return (ref, *try_read_image(ref, mode))

    for ref, img, reason in thread_map(decode, refs, workers):
        if reason is not None and bad_files is not None:
            bad_files.append((str(ref), reason))
        yield ref, img


def _list_folder(folder: Path) -> list[ImageRef]:
    """Images under `folder`, following symlinked sub-folders; a link back to a folder already
    being walked (a loop) or already walked is skipped, so each real folder is read once."""
    found = []
    seen = set()
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        try:
            stat = os.stat(directory)
        except OSError:
            subdirs[:] = []
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen:  # reached again through a link: its images are already listed
            subdirs[:] = []
            continue
        seen.add(identity)
        subdirs[:] = [name for name in subdirs if not _is_hidden(name) and _new_folder(Path(directory, name), seen)]
        found += [Path(directory, name) for name in files if not _is_hidden(name) and _is_image_name(name)]
    return [ImageRef(None, str(path)) for path in sorted(found)]


def _new_folder(path: Path, seen: set[tuple[int, int]]) -> bool:
    try:
        stat = os.stat(path)
    except OSError:  # a dangling link
        return False
    return (stat.st_dev, stat.st_ino) not in seen


def _list_zip(archive: Path) -> list[ImageRef]:
    with zipfile.ZipFile(archive) as handle:
        names = [info.filename for info in handle.infolist() if not info.is_dir()]
    wanted = [name for name in names if _is_image_name(name) and not any(_is_hidden(part) for part in name.split("/"))]
    return [ImageRef(str(archive), name) for name in sorted(wanted)]


def _open_archive(path: str, zip_cache: ZipCache | None) -> zipfile.ZipFile:
    """A per-process open handle; ZipFile serialises concurrent member reads itself."""
    cache = _OPEN_ARCHIVES if zip_cache is None else zip_cache
    key = (path, os.getpid())
    archive = cache.get(key)
    if archive is None:
        # Two threads may race here; the loser's handle is simply garbage-collected.
        archive = cache.setdefault(key, zipfile.ZipFile(path))
    return archive


def _channels_of(mode: str) -> int:
    for channels, name in CHANNEL_MODES.items():
        if name == mode:
            return channels
    raise ValueError(f"mode must be one of {', '.join(CHANNEL_MODES.values())} or None; got {mode!r}")


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _expected() -> str:
    return f"expected a folder or .zip of images ({', '.join(IMAGE_EXTENSIONS)})"
