"""The scoring flags, each defined once: the group that eval, compare and fuse share (one set of
flags over one Scorer), and its parts, which fid, fid-stats, kid, afd and nearest take."""
from __future__ import annotations

import argparse

import torch

from difflab.cli.flags import add_alias, renamed_values

SCORING_GROUP = "scoring (the same in eval, compare and fuse)"
Container = argparse.ArgumentParser | argparse._ArgumentGroup


def add_feature_options(group: Container, batch_size: int | None = None, what: str = "feature") -> None:
    """--features, --inception-weights and --feature-batch-size (`what`: what a batch is for)."""
    from difflab.experiments.scoring import DEFAULT_FEATURE_BATCH_SIZE

    batch_size = batch_size or DEFAULT_FEATURE_BATCH_SIZE
    group.add_argument("--features", default="inception", metavar="SPEC",
                       help="'inception' (FID Inception-v3, default) or FILE.py:FUNCTION returning a network "
                            "with features(images in [0, 1]), e.g. ../shared/eval/featnet.py:cifar10; other "
                            "features give an FD, not an FID")
    group.add_argument("--inception-weights", metavar="PATH",
                       help="pt_inception-2015-12-05-6726825d.pth (else $DIFFLAB_INCEPTION_WEIGHTS, the cache, "
                            "or a download)")
    add_feature_batch_size(group, batch_size, what)


def add_feature_batch_size(group: Container, batch_size: int, what: str = "feature") -> None:
    group.add_argument("--feature-batch-size", type=int, default=batch_size, metavar="N",
                       help=f"images per {what} batch when reading a set (default {batch_size})")


def add_detector_options(group: Container) -> None:
    group.add_argument("--detector", choices=("cascade", "yolo"), default="cascade",
                       help="anime-face detector: OpenCV LBP cascade (default) or an ultralytics YOLO model")
    group.add_argument("--detector-weights", metavar="PATH",
                       help="cascade: lbpcascade_animeface.xml (else $DIFFLAB_ANIMEFACE_CASCADE, the cache, or a "
                            "download); yolo: the .pt file, required")


def add_afd_option(group: Container) -> None:
    from difflab.experiments.scoring import AFD_MODES, AFD_RENAMED

    group.add_argument("--afd", type=renamed_values("--afd", AFD_RENAMED), choices=AFD_MODES, default="auto",
                       help="anime-face detection rate: auto = when the default detector can be loaded, else "
                            "n/a with the reason (default); on = fail if it cannot; off = skip it")


def add_kid_options(group: Container) -> None:
    from difflab.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE

    group.add_argument("--kid-subsets", type=int, default=DEFAULT_NUM_SUBSETS, metavar="N",
                       help=f"KID: random subsets to average (default {DEFAULT_NUM_SUBSETS})")
    group.add_argument("--kid-subset-size", type=int, default=DEFAULT_SUBSET_SIZE, metavar="N",
                       help=f"KID: images per subset, capped by the smaller set (default {DEFAULT_SUBSET_SIZE})")


def add_kid_aliases(parser: Container) -> None:
    """The names `kid` and `eval` gave the KID options before issue 19."""
    add_alias(parser, "--subsets", "--kid-subsets")
    add_alias(parser, "--subset-size", "--kid-subset-size")


def add_scoring_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The scoring flags of eval, compare and fuse (the device is each command's --device)."""
    group = parser.add_argument_group(SCORING_GROUP)
    add_feature_options(group)
    add_afd_option(group)
    add_detector_options(group)
    add_kid_options(group)
    return group


def scoring_options(args: argparse.Namespace, device: torch.device):
    """ScoringOptions from the parsed flags, checked (ConfigError) before any image is generated."""
    from difflab.experiments.scoring import ScoringOptions

    return ScoringOptions(features=args.features, inception_weights=args.inception_weights, afd=args.afd,
                          detector=args.detector, detector_weights=args.detector_weights, device=device,
                          feature_batch_size=args.feature_batch_size, kid_subsets=args.kid_subsets,
                          kid_subset_size=args.kid_subset_size, progress=not args.no_progress)
