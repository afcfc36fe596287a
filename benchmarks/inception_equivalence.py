"""Prove that difflab's FID Inception equals pytorch-fid's, without the published weights.

The FID weights cannot be downloaded on the development machines, so both networks get
the same random weights instead (one state dict, loaded strictly into each; the
weights' values do not matter for proving the architecture, the resizing and the
normalisation identical). Then, on two disjoint sets of real images, each tool runs its
own pipeline from the image files: pytorch-fid's ImagePathDataset + ToTensor +
InceptionV3 + calculate_frechet_distance, and difflab's list_images + scan +
FIDInceptionV3 + FeatureStatistics. The 2048-d features must agree to a relative error
under 1e-5 (float32) and so must the FID.

Both run in full float32: TF32 is off for both (difflab always turns it off; pytorch-fid
would use TF32 convolutions on Ampere+ GPUs by default, shown as an extra row).

Needs torchvision and pytorch-fid (carried as a wheel; see benchmarks/RESULTS.md):

    pip install --no-deps .whl/pytorch_fid-0.3.0-py3-none-any.whl
    PYTHONPATH=src python benchmarks/inception_equivalence.py --data .data/anime-faces-64px-20k.zip
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from difflab.data.files import list_images
from difflab.metrics.extractors import INCEPTION_NAME, Extractor
from difflab.metrics.features import extract_features, full_float32
from difflab.metrics.frechet import frechet_distance
from difflab.metrics.inception import inception_from_state_dict, random_state_dict
from difflab.metrics.statistics import FeatureStatistics

FEATURE_TOLERANCE = 1e-5  # max |difflab - pytorch-fid| / max |pytorch-fid|, float32
FID_TOLERANCE = 1e-5  # |FID difference| / FID


def import_pytorch_fid():
    try:
        import pytorch_fid
        import pytorch_fid.fid_score
        import pytorch_fid.inception
    except ImportError as error:
        sys.exit(
            f"this script compares with pytorch-fid, which is not importable here ({error}).\n"
            "It needs torchvision and pytorch-fid: pip install --no-deps .whl/pytorch_fid-0.3.0-py3-none-any.whl\n"
            "(download the wheel with: python3 -m pip download --no-deps --only-binary=:all: "
            "-d .whl pytorch-fid==0.3.0)"
        )
    return pytorch_fid


def pytorch_fid_network(pytorch_fid, state_dict: dict, device: torch.device) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 for FID, fed `state_dict` where it would download the weights."""
    with mock.patch.object(pytorch_fid.inception, "load_state_dict_from_url", return_value=state_dict):
        network = pytorch_fid.inception.InceptionV3(
            [3], resize_input=True, normalize_input=True, use_fid_inception=True
        )  # fid_inception_v3() loads the state dict into torchvision's Inception3 with strict=True
    return network.to(device).eval()


def extract_disjoint_sets(archive: Path, num_images: int, folder: Path) -> tuple[Path, Path]:
    """The first 2 x `num_images` images of the archive, as two folders of the original files."""
    with zipfile.ZipFile(archive) as handle:
        names = sorted(n for n in handle.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
        if len(names) < 2 * num_images:
            sys.exit(f"{archive} has {len(names)} images; --num-images {num_images} needs {2 * num_images}")
        sets = []
        for index, members in enumerate((names[:num_images], names[num_images : 2 * num_images])):
            target = folder / f"set_{'AB'[index]}"
            target.mkdir()
            for member in members:
                (target / Path(member).name).write_bytes(handle.read(member))
            sets.append(target)
    return sets[0], sets[1]


def pytorch_fid_features(pytorch_fid, network, folder: Path, args, device) -> tuple[list[str], np.ndarray]:
    """pytorch-fid's own loading and batching (ImagePathDataset, ToTensor, DataLoader)."""
    files = sorted(str(path) for path in folder.iterdir())
    activations = pytorch_fid.fid_score.get_activations(
        files, network, batch_size=args.batch_size, dims=2048, device=device, num_workers=args.workers
    )
    return [Path(f).name for f in files], activations


def difflab_features(extractor: Extractor, folder: Path, args, device) -> tuple[list[str], np.ndarray]:
    features, scan = extract_features(str(folder), list_images(folder), extractor, device, args.batch_size)
    return [Path(ref.name).name for ref in scan.used], features


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(candidate - reference).max() / np.abs(reference).max())


def scipy_sqrtm_accepting_disp(pytorch_fid):
    """pytorch-fid 0.3.0 calls sqrtm(..., disp=False), which SciPy >= 1.18 no longer accepts.
    Give its module a sqrtm that takes `disp` and returns (root, error estimate) as before;
    the root itself is SciPy's, unchanged."""
    import scipy.linalg
    original = scipy.linalg.sqrtm

    def sqrtm(matrix, disp=True, **kwargs):
        root = original(matrix, **kwargs)
        if disp:
            return root
        error = np.linalg.norm(root @ root - matrix, "fro") / np.linalg.norm(matrix, "fro")
        return root, error

    return mock.patch.object(pytorch_fid.fid_score.linalg, "sqrtm", sqrtm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="zip of real images (e.g. anime-faces-64px-20k.zip)")
    parser.add_argument("--num-images", type=int, default=2500, help="images per set; > 2048 for full-rank covariances")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8, help="pytorch-fid DataLoader workers")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    pytorch_fid = import_pytorch_fid()
    import torchvision

    device = torch.device(args.device)
    state_dict = random_state_dict(args.seed)
    theirs = pytorch_fid_network(pytorch_fid, state_dict, device)
    ours = Extractor(INCEPTION_NAME, inception_from_state_dict(state_dict).to(device), identity="random weights")
    rows: list[tuple[str, str, str, str]] = []
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        set_a, set_b = extract_disjoint_sets(args.data, args.num_images, Path(scratch))
        their_features, our_features = {}, {}
        with full_float32():
            for name, folder in (("A", set_a), ("B", set_b)):
                their_names, their_features[name] = pytorch_fid_features(pytorch_fid, theirs, folder, args, device)
                our_names, our_features[name] = difflab_features(ours, folder, args, device)
                if their_names != our_names:
                    sys.exit(f"set {name}: the two tools read different files")
                error = relative_error(their_features[name], our_features[name])
                verdict = "PASS" if error < FEATURE_TOLERANCE else "FAIL"
                rows.append((f"features, set {name} ({len(our_names)} images): max rel. error",
                             f"{error:.2e}", f"< {FEATURE_TOLERANCE:g}", verdict))  # fmt: skip

        their_stats = [(np.mean(a, axis=0), np.cov(a, rowvar=False)) for a in their_features.values()]
        with scipy_sqrtm_accepting_disp(pytorch_fid):
            their_fid = pytorch_fid.fid_score.calculate_frechet_distance(*their_stats[0], *their_stats[1])
        our_stats = [FeatureStatistics.from_features(f, ours, name) for name, f in our_features.items()]
        # the numerics alone: FeatureStatistics.frechet_distance would also refuse sets under 2049 images
        our_fid = frechet_distance(our_stats[0].mu, our_stats[0].sigma, our_stats[1].mu, our_stats[1].sigma)
        fid_error = abs(our_fid - their_fid) / abs(their_fid)
        rows.append(("FID, pytorch-fid pipeline", f"{their_fid:.6f}", "", ""))
        rows.append(("FID, difflab pipeline", f"{our_fid:.6f}", "", ""))
        rows.append(("FID rel. difference", f"{fid_error:.2e}", f"< {FID_TOLERANCE:g}",
                     "PASS" if fid_error < FID_TOLERANCE else "FAIL"))  # fmt: skip
        same_numerics = frechet_distance(*their_stats[0], *their_stats[1])
        rows.append(("Frechet numerics alone (same statistics)", f"{abs(same_numerics - their_fid):.1e}", "== 0",
                     "PASS" if same_numerics == their_fid else "FAIL"))  # fmt: skip

        if device.type == "cuda":  # for information: pytorch-fid under PyTorch's default TF32 convolutions
            _, tf32_features = pytorch_fid_features(pytorch_fid, theirs, set_a, args, device)
            rows.append(("info: pytorch-fid with default TF32 convs vs float32, set A",
                         f"{relative_error(their_features['A'], tf32_features):.2e}", "", ""))  # fmt: skip

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"difflab FID Inception port vs pytorch-fid {getattr(pytorch_fid, '__version__', '?')}, "
          f"random weights (seed {args.seed}), {len(state_dict)} tensors loaded strictly into both")  # fmt: skip
    print(f"device {device_name}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"data {args.data.name}; {time.perf_counter() - started:.0f} s\n")  # fmt: skip
    print("| check | value | limit | result |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    failed = any(row[3] == "FAIL" for row in rows)
    print("\nALL CHECKS PASSED" if not failed else "\nSOME CHECKS FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
