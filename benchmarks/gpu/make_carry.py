"""Build the carry folders of benchmarks/gpu/monitor_warm_start.sh from ../shared (nothing of it is committed).

    python benchmarks/gpu/make_carry.py            # .gpu1 (call 1) and .gpu3 (calls 2 and 3)

The device removes a folder carried in one call and not named in the next (seen in session 10), and
a call carries at most 64 MiB with the tracked tree. Call 1 trains on all 20,000 faces: `.gpu1`. Calls
2 and 3 need the anime features and the MNIST files together: `.gpu3` holds both, with 8,000 of the
faces as the real set of the scores; the script unpacks it into `.gpu1` and `.gpu2` on the device.
Both folders must be ignored (`.git/info/exclude`)."""
from __future__ import annotations

import argparse
import random
import shutil
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
ANIME = "anime-faces-64px-20k.zip"
FEATURES = ["featnet.py", "featnet-cifar10.safetensors", "featnet-mnist.safetensors"]
MNIST = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]
LIMIT_BYTES = 64 * 2**20


def copy(names: list[str], source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / name, target / name)


def subset_zip(source: Path, target: Path, count: int, seed: int = 0) -> None:
    """`count` images drawn at random (seeded). Not the first `count`: the zip is in file-number order,
    and its first 8,000 faces are FD-featnet 0.34 from the other 12,000 (session 11), a floor under
    every score against them."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for name in sorted(random.Random(seed).sample(names, min(count, len(names)))):
            out.writestr(name, archive.read(name))


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--faces", type=int, default=8_000, help="faces in .gpu3's real set")
    args = parser.parse_args()
    data, evaluation = args.shared / "data", args.shared / "eval"
    for folder in (".gpu1", ".gpu3"):
        shutil.rmtree(REPO / folder, ignore_errors=True)
    gpu1 = REPO / ".gpu1"
    copy([ANIME, "lbpcascade_animeface.xml"], data, gpu1)
    copy(FEATURES[:2], evaluation, gpu1)
    g1, g2 = REPO / ".gpu3" / "g1", REPO / ".gpu3" / "g2"
    g1.mkdir(parents=True)
    subset_zip(data / ANIME, g1 / ANIME, args.faces)
    copy(["lbpcascade_animeface.xml"], data, g1)
    copy(FEATURES[:2], evaluation, g1)
    copy(["anime-faces-96px-2k.zip"], data, g2)
    copy([FEATURES[0], FEATURES[2]], evaluation, g2)
    copy(MNIST, data / "mnist", g2 / "mnist")
    for folder in (gpu1, REPO / ".gpu3"):
        print(f"{folder.name}: {size_of(folder) / 2**20:.1f} MiB (with the tracked tree at most {LIMIT_BYTES // 2**20} MiB travel)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
