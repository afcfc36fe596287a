"""Evaluation commands: measure generated images against real ones.

    difflab fid submission/ ./faces                  # FID, pytorch-fid compatible
    difflab fid-stats ./faces --out faces-stats.npz  # the real set's statistics, once
    difflab fid submission/ faces-stats.npz
    difflab kid submission/ ./faces
    difflab afd submission/                          # fraction of images with an anime face
    difflab nearest submission/ ./faces --out nn.png # closest training image per sample
    difflab eval submission/ ./faces --json metrics.json

Inputs are folders or .zip archives of images; `fid` also takes .npz statistics.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.errors import ConfigError, DataError

IMAGES_HELP = "folder or .zip of images"
STATISTICS_HELP = "folder or .zip of images, or .npz statistics (from fid-stats or pytorch-fid)"


def register(subparsers: argparse._SubParsersAction) -> None:
    from difflab.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE
    from difflab.metrics.nearest import DEFAULT_COPY_THRESHOLD

    fid = subparsers.add_parser(
        "fid", help="Frechet distance (FID with the default Inception features)",
        description="FID exactly as pytorch-fid computes it; with --features FILE.py:FUNCTION, an FD in that space.",
    )  # fmt: skip
    fid.add_argument("generated", help=STATISTICS_HELP)
    fid.add_argument("reference", help=STATISTICS_HELP)
    fid.add_argument("--no-cache", action="store_true", help="recompute the reference statistics even if cached")
    _add_feature_options(fid)
    _add_output_options(fid)
    fid.set_defaults(func=run_fid)

    fid_stats = subparsers.add_parser(
        "fid-stats", help="save a real set's feature statistics for later fid runs",
        description="Save mean and covariance of the features as .npz (readable by pytorch-fid too).",
    )  # fmt: skip
    fid_stats.add_argument("images", help=IMAGES_HELP)
    fid_stats.add_argument("--out", required=True, help="the .npz file to write")
    fid_stats.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    fid_stats.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    _add_feature_options(fid_stats)
    _add_output_options(fid_stats, json=False)
    fid_stats.set_defaults(func=run_fid_stats)

    kid = subparsers.add_parser(
        "kid", help="kernel distance (unbiased, fine for small samples)",
        description="KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.",
    )  # fmt: skip
    kid.add_argument("generated", help=IMAGES_HELP)
    kid.add_argument("reference", help=IMAGES_HELP)
    _add_kid_options(kid, DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE)
    _add_feature_options(kid)
    _add_output_options(kid)
    kid.set_defaults(func=run_kid)

    afd = subparsers.add_parser(
        "afd", help="fraction of images in which an anime face is detected",
        description="AFD rate. Run it on the real images too: the detector misses some real faces.",
    )  # fmt: skip
    afd.add_argument("images", help=IMAGES_HELP)
    afd.add_argument("--reference", help=f"real images ({IMAGES_HELP}) to report the detector's own rate on")
    _add_detector_options(afd)
    _add_output_options(afd)
    afd.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch (default 64)")
    afd.set_defaults(func=run_afd)

    nearest = subparsers.add_parser(
        "nearest", help="memorisation check: closest training image per generated image",
        description="Nearest training image in pixels and in feature space; counts near-copies.",
    )  # fmt: skip
    nearest.add_argument("generated", help=IMAGES_HELP)
    nearest.add_argument("training", help=IMAGES_HELP)
    _add_nearest_options(nearest, DEFAULT_COPY_THRESHOLD, image_required=True)
    _add_feature_options(nearest)
    _add_output_options(nearest)
    nearest.set_defaults(func=run_nearest)

    evaluate = subparsers.add_parser(
        "eval", help="FID/FD, KID, AFD rate and memorisation check in one pass",
        description="All evaluation metrics, reading each image once.",
    )  # fmt: skip
    evaluate.add_argument("generated", help=IMAGES_HELP)
    evaluate.add_argument("reference", help=STATISTICS_HELP + "; statistics allow the FD only")
    _add_kid_options(evaluate, DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE)
    _add_nearest_options(evaluate, DEFAULT_COPY_THRESHOLD, image_required=False)
    _add_detector_options(evaluate)
    evaluate.add_argument("--no-afd", action="store_true", help="skip the anime-face detector")
    _add_feature_options(evaluate)
    _add_output_options(evaluate)
    evaluate.set_defaults(func=run_eval)


def _add_feature_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--features", default="inception", metavar="SPEC",
                       help="'inception' (FID Inception-v3, default) or FILE.py:FUNCTION returning a network "
                            "with features(images in [0, 1]); other features give an FD, not an FID")
    group.add_argument("--inception-weights", metavar="PATH",
                       help="pt_inception-2015-12-05-6726825d.pth (else $DIFFLAB_INCEPTION_WEIGHTS, the cache, "
                            "or a download)")
    group.add_argument("--device", help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    group.add_argument("--batch-size", type=int, default=50, metavar="N", help="images per batch (default 50)")


def _add_detector_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("anime-face detector")
    group.add_argument("--detector", choices=("cascade", "yolo"), default="cascade",
                       help="OpenCV LBP cascade (default) or an ultralytics YOLO model")
    group.add_argument("--detector-weights", metavar="PATH",
                       help="cascade: lbpcascade_animeface.xml (else $DIFFLAB_ANIMEFACE_CASCADE, the cache, or a "
                            "download); yolo: the .pt file, required")


def _add_kid_options(parser: argparse.ArgumentParser, subsets: int, subset_size: int) -> None:
    group = parser.add_argument_group("KID")
    group.add_argument("--subsets", type=int, default=subsets, metavar="N",
                       help=f"random subsets to average (default {subsets})")
    group.add_argument("--subset-size", type=int, default=subset_size, metavar="N",
                       help=f"images per subset, capped by the smaller set (default {subset_size})")


def _add_nearest_options(parser: argparse.ArgumentParser, threshold: float, image_required: bool) -> None:
    group = parser.add_argument_group("memorisation check")
    group.add_argument("--out", required=image_required, metavar="PNG",
                       help="image of the closest generated/training pairs")
    group.add_argument("--pairs", type=int, default=8, metavar="N", help="pairs shown in --out (default 8)")
    group.add_argument("--copy-threshold", type=float, default=threshold, metavar="RMS",
                       help=f"RMS pixel distance (0..1) under which a sample counts as a near-copy "
                            f"(default {threshold})")


def _add_output_options(parser: argparse.ArgumentParser, json: bool = True) -> None:
    group = parser.add_argument_group("output")
    if json:
        group.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- commands ---------------------------------------------------------------------------


def run_fid(args: argparse.Namespace) -> int:
    from difflab.metrics.evaluation import statistics_of
    from difflab.metrics.report import distance_result

    _check_common(args)
    extractor, device = _extractor_and_device(args)
    options = dict(device=device, batch_size=args.batch_size, progress=not args.no_progress)
    generated = statistics_of(args.generated, extractor, **options)
    generated.statistics.check_enough_images()  # before reading a large reference set
    reference = statistics_of(args.reference, extractor, use_cache=not args.no_cache, **options)
    value = generated.statistics.frechet_distance(reference.statistics)
    results = {"generated": generated.summary(), "reference": reference.summary(), **distance_result(extractor, value)}
    return _emit(results, args.json)


def run_fid_stats(args: argparse.Namespace) -> int:
    from difflab.metrics.evaluation import statistics_of

    _check_common(args)
    _require_images(args.images, "fid-stats IMAGES")
    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it")
    extractor, device = _extractor_and_device(args)
    measured = statistics_of(args.images, extractor, device=device, batch_size=args.batch_size,
                             progress=not args.no_progress, use_cache=not args.no_cache)  # fmt: skip
    measured.statistics.save(out)
    print(f"wrote {extractor.name} statistics of {measured.statistics.num_images:,} images in {args.images} to {out}")
    return 0


def run_kid(args: argparse.Namespace) -> int:
    from difflab.metrics.kid import kernel_distance
    from difflab.metrics.report import kid_result

    _check_common(args)
    _check_kid(args)
    for source, name in ((args.generated, "kid GENERATED"), (args.reference, "kid REFERENCE")):
        _require_images(source, name)
    extractor, device = _extractor_and_device(args)
    generated = _measure(args, args.generated, extractor, device)
    reference = _measure(args, args.reference, extractor, device)
    kid = kernel_distance(generated.features, reference.features, args.subsets, args.subset_size)
    results = {"generated": generated.summary(), "reference": reference.summary(), "extractor": extractor.name,
               "kid": kid_result(kid)}  # fmt: skip
    return _emit(results, args.json)


def run_afd(args: argparse.Namespace) -> int:
    from difflab.metrics.afd import load_detector
    from difflab.metrics.evaluation import measure
    from difflab.metrics.report import afd_result

    _check_batch_size(args)
    detector = load_detector(args.detector, args.detector_weights)
    options = dict(detector=detector, batch_size=args.batch_size, progress=not args.no_progress)
    images = measure(args.images, **options)
    reference = measure(args.reference, **options) if args.reference else None
    results = {"images": images.summary()}
    if reference:
        results["reference"] = reference.summary()
    results["afd"] = afd_result(detector.name, images.faces_found, reference.faces_found if reference else None)
    return _emit(results, args.json)


def run_nearest(args: argparse.Namespace) -> int:
    from difflab.metrics.report import nearest_result

    _check_common(args)
    _check_nearest(args)
    for source, name in ((args.generated, "nearest GENERATED"), (args.training, "nearest TRAINING")):
        _require_images(source, name)
    extractor, device = _extractor_and_device(args)
    generated = _measure(args, args.generated, extractor, device, thumbnails=True)
    training = _measure(args, args.training, extractor, device, thumbnails=True)
    matches, copies = _memorisation_check(args, generated, training)
    results = {"generated": generated.summary(), "reference": training.summary(), "extractor": extractor.name,
               "nearest": nearest_result(matches, copies, args.copy_threshold, args.out)}  # fmt: skip
    return _emit(results, args.json)


def run_eval(args: argparse.Namespace) -> int:
    from difflab.metrics.kid import kernel_distance
    from difflab.metrics.report import afd_result, distance_result, kid_result, nearest_result
    from difflab.metrics.statistics import FeatureStatistics

    _check_common(args)
    _check_kid(args)
    _check_nearest(args)
    _require_images(args.generated, "eval GENERATED")
    detector, notes = _optional_detector(args)
    extractor, device = _extractor_and_device(args)
    reference, reference_statistics, reference_summary = _eval_reference(args, extractor, device, detector, notes)
    generated = _measure(args, args.generated, extractor, device, detector=detector, thumbnails=True)
    results = {"generated": generated.summary(), "reference": reference_summary}

    generated_statistics = FeatureStatistics.from_features(generated.features, extractor, args.generated)
    try:
        results.update(distance_result(extractor, generated_statistics.frechet_distance(reference_statistics)))
    except DataError as error:  # too few images: say why, and still give KID
        results.update(distance_result(extractor, None, error=str(error)))
    if reference is not None:
        kid = kernel_distance(generated.features, reference.features, args.subsets, args.subset_size)
        results["kid"] = kid_result(kid)
    if detector is not None:
        reference_faces = reference.faces_found if reference is not None else None
        results["afd"] = afd_result(detector.name, generated.faces_found, reference_faces)
    if reference is not None:
        matches, copies = _memorisation_check(args, generated, reference)
        results["nearest"] = nearest_result(matches, copies, args.copy_threshold, args.out)
    if notes:
        results["notes"] = notes
    return _emit(results, args.json)


def _eval_reference(args: argparse.Namespace, extractor, device, detector, notes: list[str]):
    """The reference's measurement (None for a statistics file), its statistics and its summary."""
    from difflab.metrics.evaluation import is_statistics_file
    from difflab.metrics.statistics import FeatureStatistics, check_matches_extractor

    if is_statistics_file(args.reference):
        statistics = FeatureStatistics.load(args.reference)
        check_matches_extractor(statistics, extractor)
        notes.append("the reference is a statistics file: KID, the memorisation check and the real AFD rate "
                     "need its images")  # fmt: skip
        summary = {"source": args.reference, "num_images": statistics.num_images, "statistics_from": "file"}
        return None, statistics, summary
    reference = _measure(args, args.reference, extractor, device, detector=detector, thumbnails=True)
    statistics = FeatureStatistics.from_features(reference.features, extractor, args.reference)
    return reference, statistics, reference.summary()


# --- shared steps -----------------------------------------------------------------------


def _extractor_and_device(args: argparse.Namespace):
    from difflab.metrics.extractors import load_extractor
    from difflab.metrics.features import default_device

    try:
        device = torch.device(args.device) if args.device else default_device()
    except RuntimeError as error:
        raise ConfigError(f"--device: {error}") from error
    return load_extractor(args.features, device, args.inception_weights), device


def _measure(args: argparse.Namespace, source: str, extractor, device, detector=None, thumbnails: bool = False):
    from difflab.metrics.evaluation import measure

    return measure(source, extractor, detector=detector, thumbnails=thumbnails, device=device,
                   batch_size=args.batch_size, progress=not args.no_progress)  # fmt: skip


def _optional_detector(args: argparse.Namespace):
    """eval measures faces when it can: without OpenCV or the cascade file, a note replaces the AFD rate."""
    from difflab.metrics.afd import load_detector, opencv_available

    if args.no_afd:
        return None, []
    if args.detector == "cascade" and not opencv_available():
        return None, ["AFD skipped: OpenCV is not installed (pip install 'difflab[afd]')"]
    try:
        return load_detector(args.detector, args.detector_weights, device=args.device), []
    except DataError as error:
        if args.detector_weights:  # a file the user named must work
            raise
        return None, [f"AFD skipped: {error}"]  # e.g. offline without the cascade: the rest still counts


def _memorisation_check(args: argparse.Namespace, generated, training):
    from difflab.metrics.nearest import closest_pairs_image, find_matches, near_copies

    matches = find_matches(generated.used, generated.features, generated.thumbnails,
                           training.used, training.features, training.thumbnails)  # fmt: skip
    if args.out:
        closest_pairs_image(matches, args.pairs).save(args.out)
    return matches, near_copies(matches, args.copy_threshold)


def _emit(results: dict, json_path: str | None) -> int:
    from difflab.metrics.report import format_table, write_json

    print(format_table(results))
    if json_path:
        write_json(json_path, results)
    return 0


def _require_images(source: str, name: str) -> None:
    from difflab.metrics.evaluation import is_statistics_file

    if is_statistics_file(source):
        raise ConfigError(f"{name} must be images (a folder or .zip), not statistics: {source}")


def _check_batch_size(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")


def _check_common(args: argparse.Namespace) -> None:
    _check_batch_size(args)


def _check_kid(args: argparse.Namespace) -> None:
    if args.subsets < 1:
        raise ConfigError(f"--subsets must be at least 1, got {args.subsets}")
    if args.subset_size < 2:
        raise ConfigError(f"--subset-size must be at least 2, got {args.subset_size}")


def _check_nearest(args: argparse.Namespace) -> None:
    if args.pairs < 1:
        raise ConfigError(f"--pairs must be at least 1, got {args.pairs}")
    if args.out and Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"--out must be a .png or .jpg file, got {args.out}")
    if not 0 < args.copy_threshold <= 1:
        raise ConfigError(f"--copy-threshold is an RMS pixel distance in (0, 1], got {args.copy_threshold}")
