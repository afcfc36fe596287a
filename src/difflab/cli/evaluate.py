"""Evaluation commands: measure generated images against real ones.

    difflab fid submission/ ./faces                  # FID, pytorch-fid compatible
    difflab fid-stats ./faces --out faces-stats.npz  # the real set's statistics, once
    difflab fid submission/ faces-stats.npz
    difflab kid submission/ ./faces
    difflab afd submission/ --real ./faces           # fraction of images with an anime face
    difflab nearest submission/ ./faces --out nn.png # closest training image per sample
    difflab eval submission/ ./faces --json metrics.json

Inputs are folders or .zip archives of images; `fid` and `eval` also take .npz statistics as REAL.
`eval` is a thin wrapper over the scoring core that `compare` and `fuse` use (experiments.scoring):
the same scoring flags (cli.scoring_options), the same scores and the same failure policy.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.cli.flags import add_alias
from difflab.cli.scoring_options import (add_detector_options, add_feature_batch_size, add_feature_options,
                                         add_kid_aliases, add_kid_options, add_scoring_options)
from difflab.errors import OPTION, ConfigError

IMAGES_HELP = "folder or .zip of images"
STATISTICS_HELP = "folder or .zip of images, or .npz statistics (from fid-stats or pytorch-fid)"
GENERATED, REAL = "GENERATED", "REAL"  # the metavars of the two sets, in every command
DEVICE_HELP = "cuda, cpu, cuda:1 ... (default: cuda if available)"


def register(subparsers: argparse._SubParsersAction) -> None:
    from difflab.metrics.nearest import DEFAULT_COPY_THRESHOLD

    fid = subparsers.add_parser(
        "fid", help="Frechet distance (FID with the default Inception features)",
        description="FID exactly as pytorch-fid computes it; with --features FILE.py:FUNCTION, an FD in that space.",
    )  # fmt: skip
    fid.add_argument("generated", metavar=GENERATED, help=STATISTICS_HELP)
    fid.add_argument("real", metavar=REAL, help=STATISTICS_HELP)
    fid.add_argument("--no-cache", action="store_true", help="recompute the real set's statistics even if cached")
    _add_features_group(fid)
    _add_output_options(fid)
    fid.set_defaults(func=run_fid)

    fid_stats = subparsers.add_parser(
        "fid-stats", help="save a real set's feature statistics for later fid runs",
        description="Save mean and covariance of the features as .npz (readable by pytorch-fid too).",
    )  # fmt: skip
    fid_stats.add_argument("real", metavar=REAL, help=IMAGES_HELP)
    fid_stats.add_argument("--out", required=True, help="the .npz file to write")
    fid_stats.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    fid_stats.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    _add_features_group(fid_stats)
    _add_output_options(fid_stats, json=False)
    fid_stats.set_defaults(func=run_fid_stats)

    kid = subparsers.add_parser(
        "kid", help="kernel distance (unbiased, fine for small samples)",
        description="KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.",
    )  # fmt: skip
    kid.add_argument("generated", metavar=GENERATED, help=IMAGES_HELP)
    kid.add_argument("real", metavar=REAL, help=IMAGES_HELP)
    add_kid_options(kid.add_argument_group("KID"))
    add_kid_aliases(kid)
    _add_features_group(kid)
    _add_output_options(kid)
    kid.set_defaults(func=run_kid)

    afd = subparsers.add_parser(
        "afd", help="fraction of images in which an anime face is detected",
        description="AFD rate. Run it on the real images too (--real): the detector misses some real faces.",
    )  # fmt: skip
    afd.add_argument("images", metavar="IMAGES", help=IMAGES_HELP)
    afd.add_argument("--real", metavar=REAL, help=f"real images ({IMAGES_HELP}) to report the detector's own rate on")
    add_alias(afd, "--reference", "--real")
    group = afd.add_argument_group("anime-face detector")
    add_detector_options(group)
    add_feature_batch_size(group, 64, what="detector")
    add_alias(afd, "--batch-size", "--feature-batch-size")
    _add_output_options(afd)
    afd.set_defaults(func=run_afd)

    nearest = subparsers.add_parser(
        "nearest", help="memorisation check: closest training image per generated image",
        description="Nearest training image in pixels and in feature space; counts near-copies.",
    )  # fmt: skip
    nearest.add_argument("generated", metavar=GENERATED, help=IMAGES_HELP)
    nearest.add_argument("real", metavar=REAL, help=f"the training images: {IMAGES_HELP}")
    _add_nearest_options(nearest, DEFAULT_COPY_THRESHOLD, image_required=True)
    _add_features_group(nearest)
    _add_output_options(nearest)
    nearest.set_defaults(func=run_nearest)

    evaluate = subparsers.add_parser(
        "eval", help="FID/FD, KID, AFD rate and memorisation check in one pass",
        description="All evaluation metrics, reading each image once; scored exactly as compare and fuse score.",
    )  # fmt: skip
    evaluate.add_argument("generated", metavar=GENERATED, help=IMAGES_HELP)
    evaluate.add_argument("real", metavar=REAL, help=STATISTICS_HELP + "; statistics allow the FD only")
    add_scoring_options(evaluate)
    evaluate.add_argument("--device", help=DEVICE_HELP)
    _add_nearest_options(evaluate, DEFAULT_COPY_THRESHOLD, image_required=False)
    _add_output_options(evaluate)
    add_alias(evaluate, "--batch-size", "--feature-batch-size")
    add_kid_aliases(evaluate)
    add_alias(evaluate, "--no-afd", "--afd", value="off")
    evaluate.set_defaults(func=run_eval)


def _add_features_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    add_feature_options(group)
    group.add_argument("--device", help=DEVICE_HELP)
    add_alias(parser, "--batch-size", "--feature-batch-size")  # these commands generate nothing


def _add_nearest_options(parser: argparse.ArgumentParser, threshold: float, image_required: bool) -> None:
    group = parser.add_argument_group("memorisation check")
    group.add_argument("--out", required=image_required, metavar="PNG",
                       help="image of the closest generated/training pairs")
    group.add_argument("--grid-pairs", type=int, default=8, metavar="N", help="pairs shown in --out (default 8)")
    group.add_argument("--copy-threshold", type=float, default=threshold, metavar="RMS",
                       help=f"RMS pixel distance (0..1) under which a sample counts as a near-copy "
                            f"(default {threshold})")
    add_alias(parser, "--pairs", "--grid-pairs")


def _add_output_options(parser: argparse.ArgumentParser, json: bool = True) -> None:
    group = parser.add_argument_group("output")
    if json:
        group.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- commands ---------------------------------------------------------------------------


def run_fid(args: argparse.Namespace) -> int:
    from difflab.metrics.evaluation import statistics_of
    from difflab.metrics.report import distance_result

    extractor, device = _extractor_and_device(args)
    options = dict(device=device, batch_size=args.feature_batch_size, progress=not args.no_progress)
    generated = statistics_of(args.generated, extractor, **options)
    generated.statistics.check_enough_images()  # before reading a large real set
    real = statistics_of(args.real, extractor, use_cache=not args.no_cache, **options)
    value = generated.statistics.frechet_distance(real.statistics)
    results = {"generated": generated.summary(), "reference": real.summary(), **distance_result(extractor, value)}
    return _emit(results, args.json)


def run_fid_stats(args: argparse.Namespace) -> int:
    from difflab.metrics.evaluation import statistics_of

    _require_images(args.real, "real")
    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"{OPTION} must end in .npz, got {out}", option="out")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{OPTION} {out} exists; pass {{option:overwrite}} to replace it", option="out")
    extractor, device = _extractor_and_device(args)
    measured = statistics_of(args.real, extractor, device=device, batch_size=args.feature_batch_size,
                             progress=not args.no_progress, use_cache=not args.no_cache)  # fmt: skip
    measured.statistics.save(out)
    print(f"wrote {extractor.name} statistics of {measured.statistics.num_images:,} images in {args.real} to {out}")
    return 0


def run_kid(args: argparse.Namespace) -> int:
    from difflab.experiments.scoring import check_kid_options
    from difflab.metrics.kid import kernel_distance
    from difflab.metrics.report import kid_result

    check_kid_options(args.kid_subsets, args.kid_subset_size)
    for source, name in ((args.generated, "generated"), (args.real, "real")):
        _require_images(source, name)
    extractor, device = _extractor_and_device(args)
    generated = _measure(args, args.generated, extractor, device)
    real = _measure(args, args.real, extractor, device)
    kid = kernel_distance(generated.features, real.features, args.kid_subsets, args.kid_subset_size)
    results = {"generated": generated.summary(), "reference": real.summary(), "extractor": extractor.name,
               "kid": kid_result(kid)}  # fmt: skip
    return _emit(results, args.json)


def run_afd(args: argparse.Namespace) -> int:
    from difflab.experiments.scoring import check_feature_batch_size
    from difflab.metrics.afd import load_detector
    from difflab.metrics.evaluation import measure
    from difflab.metrics.report import afd_result

    check_feature_batch_size(args.feature_batch_size)
    detector = load_detector(args.detector, args.detector_weights)
    options = dict(detector=detector, batch_size=args.feature_batch_size, progress=not args.no_progress)
    images = measure(args.images, **options)
    real = measure(args.real, **options) if args.real else None
    results = {"images": images.summary()}
    if real:
        results["reference"] = real.summary()
    results["afd"] = afd_result(detector.name, images.faces_found, real.faces_found if real else None)
    return _emit(results, args.json)


def run_nearest(args: argparse.Namespace) -> int:
    from difflab.metrics.report import nearest_result

    _check_nearest(args)
    for source, name in ((args.generated, "generated"), (args.real, "real")):
        _require_images(source, name)
    extractor, device = _extractor_and_device(args)
    generated = _measure(args, args.generated, extractor, device, thumbnails=True)
    training = _measure(args, args.real, extractor, device, thumbnails=True)
    matches, copies = _memorisation_check(args, generated, training)
    results = {"generated": generated.summary(), "reference": training.summary(), "extractor": extractor.name,
               "nearest": nearest_result(matches, copies, args.copy_threshold, args.out)}  # fmt: skip
    return _emit(results, args.json)


def run_eval(args: argparse.Namespace) -> int:
    """The Scorer of compare and fuse, with thumbnails for the memorisation check, reported as eval's
    table and JSON."""
    from difflab.cli.scoring_options import scoring_options
    from difflab.experiments.scoring import Scorer
    from difflab.metrics.report import nearest_result

    options = scoring_options(args, _device(args))  # checks the scoring flags
    _check_nearest(args)
    _require_images(args.generated, "generated")
    scorer = Scorer(args.real, options, thumbnails=True)
    generated = scorer.measure(args.generated)
    results = eval_results(scorer, generated, scorer.scores(generated, name=args.generated))
    if scorer.real is not None:
        matches, copies = _memorisation_check(args, generated, scorer.real)
        results["nearest"] = nearest_result(matches, copies, args.copy_threshold, args.out)
    notes = []
    if scorer.detector is None and options.afd != "off":
        notes.append(scorer.detector_note)
    if scorer.real is None:
        notes.append("the reference is a statistics file: KID, the memorisation check and the real AFD rate "
                     "need its images")  # fmt: skip
    if notes:
        results["notes"] = notes
    return _emit(results, args.json)


def eval_results(scorer, generated, scores: dict) -> dict:
    """The Scorer's scores in eval's report: `fid` or `fd` (with `fd_error` when it cannot be
    computed), `kid` (None with `kid_error` likewise; absent against statistics) and `afd`
    (absent without a detector)."""
    from difflab.metrics.report import distance_result

    results = {"generated": generated.summary(), "reference": scorer.real_summary}
    distance = scores["distance"]
    results.update(distance_result(scorer.extractor, distance["value"], error=distance.get("reason")))
    kid = scores["kid"]
    if scorer.real is not None:
        if kid["value"] is None:
            results.update(kid=None, kid_error=kid["reason"])
        else:
            results["kid"] = {"mean": kid["value"], "std": kid["std"], "num_subsets": kid["num_subsets"],
                              "subset_size": kid["subset_size"]}
    afd = scores["afd"]
    if afd["value"] is not None:
        results["afd"] = {"detector": afd["detector"], "rate": afd["value"], "num_with_face": afd["num_with_face"],
                          "num_images": afd["num_images"]}
        if afd["reference_rate"] is not None:
            results["afd"]["reference_rate"] = afd["reference_rate"]
    return results


# --- shared steps -----------------------------------------------------------------------


def _device(args: argparse.Namespace) -> torch.device:
    from difflab.metrics.features import default_device

    try:
        return torch.device(args.device) if args.device else default_device()
    except RuntimeError as error:
        raise ConfigError(f"{OPTION}: {error}", option="device") from error


def _extractor_and_device(args: argparse.Namespace):
    from difflab.experiments.scoring import check_feature_batch_size
    from difflab.metrics.extractors import load_extractor

    check_feature_batch_size(args.feature_batch_size)
    device = _device(args)
    return load_extractor(args.features, device, args.inception_weights), device


def _measure(args: argparse.Namespace, source: str, extractor, device, detector=None, thumbnails: bool = False):
    from difflab.metrics.evaluation import measure

    return measure(source, extractor, detector=detector, thumbnails=thumbnails, device=device,
                   batch_size=args.feature_batch_size, progress=not args.no_progress)  # fmt: skip


def _memorisation_check(args: argparse.Namespace, generated, training):
    from difflab.metrics.nearest import closest_pairs_image, find_matches, near_copies

    matches = find_matches(generated.used, generated.features, generated.thumbnails,
                           training.used, training.features, training.thumbnails)  # fmt: skip
    if args.out:
        closest_pairs_image(matches, args.grid_pairs).save(args.out)
    return matches, near_copies(matches, args.copy_threshold)


def _emit(results: dict, json_path: str | None) -> int:
    from difflab.metrics.report import format_table, write_json

    print(format_table(results))
    if json_path:
        write_json(json_path, results)
    return 0


def _require_images(source: str, option: str) -> None:
    """`option` (the dest of a positional: generated, real) must be images, not an .npz."""
    from difflab.metrics.evaluation import is_statistics_file

    if is_statistics_file(source):
        raise ConfigError(f"{OPTION} must be images (a folder or .zip), not statistics: {source}", option=option)


def _check_nearest(args: argparse.Namespace) -> None:
    if args.grid_pairs < 1:
        raise ConfigError(f"{OPTION} must be at least 1, got {args.grid_pairs}", option="grid_pairs")
    if args.out and Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"{OPTION} must be a .png or .jpg file, got {args.out}", option="out")
    if not 0 < args.copy_threshold <= 1:
        raise ConfigError(f"{OPTION} is an RMS pixel distance in (0, 1], got {args.copy_threshold}",
                          option="copy_threshold")
