"""Finding, downloading and checksum-verifying the fixed files the metrics depend on.

FID is only comparable across papers when every run uses the same Inception weights,
and the AFD rate only when every run uses the same cascade, so a file is accepted only
when its SHA-256 matches, wherever it came from.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from difflab.errors import OPTION, DataError
from difflab.metrics.cache import cache_dir

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file with one canonical download URL and a known checksum."""

    filename: str
    url: str
    sha256: str
    option: str  # the option that names a local copy (its library name, e.g. "inception_weights")
    env_var: str  # the environment variable that names a local copy

    def cached_path(self) -> Path:
        return cache_dir("weights") / self.filename

    def how_to_provide(self) -> str:
        """The instructions an offline user needs, in one message; it names the option with the
        `{option}` placeholder, for a DataError raised with `option=self.option`."""
        return (
            f"{self.filename} is needed but was not found. Download it from\n"
            f"  {self.url}\n"
            f"(sha256 {self.sha256}) and either pass {OPTION} PATH, set "
            f"{self.env_var}=PATH, or put it at {self.cached_path()}"
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, remote: RemoteFile) -> Path:
    """Return `path` if its checksum is the published one; otherwise say which file is wrong."""
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise DataError(
            f"{path} is not the expected {remote.filename}: sha256 {actual}, expected "
            f"{remote.sha256}. Re-download it from {remote.url}"
        )
    return path


def locate(remote: RemoteFile, explicit: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Find a verified local copy of `remote`: the explicit path, then the environment
    variable, then the cache folder, then (online) a one-time download into the cache.

    A path the user named explicitly must exist: falling back silently to another copy
    would hide a typo.
    """
    for named_path, source in ((explicit, OPTION), (os.environ.get(remote.env_var), remote.env_var)):
        if named_path:
            path = Path(named_path).expanduser()
            if not path.is_file():
                raise DataError(f"{source} points to {path}, which does not exist.\n{remote.how_to_provide()}",
                                option=remote.option)
            return verify(path, remote)
    cached = remote.cached_path()
    if cached.is_file():
        return verify(cached, remote)
    if allow_download:
        try:
            return download(remote, cached)
        except (urllib.error.URLError, OSError) as error:
            raise DataError(f"could not download {remote.url} ({error}).\n{remote.how_to_provide()}",
                            option=remote.option) from error
    raise DataError(remote.how_to_provide(), option=remote.option)


def download(remote: RemoteFile, destination: Path) -> Path:
    """Stream `remote.url` to `destination`, hashing on the way; nothing is left behind on failure."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(remote.url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".part") as partial:
            try:
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {remote.filename}") as bar:
                    for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                        partial.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
                partial.close()
                if digest.hexdigest() != remote.sha256:
                    raise DataError(
                        f"downloaded {remote.url} but its sha256 is {digest.hexdigest()}, expected "
                        f"{remote.sha256}; not using it"
                    )
                os.replace(partial.name, destination)
            finally:
                if os.path.exists(partial.name):
                    os.unlink(partial.name)
    return destination
