"""Evaluation options shared by the experiment commands that score images (compare, fuse)."""
from __future__ import annotations

import argparse

import torch

from difflab.errors import ConfigError


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """The same --features/--detector options as `difflab eval`, under names that do not
    clash with the sampling options."""
    group = parser.add_argument_group("scoring (as difflab eval)")
    group.add_argument("--features", default="inception",
                       help="'inception' (FID, default) or FILE.py:FUNCTION, e.g. /work/shared/eval/featnet.py:cifar10 "
                            "(an FD, not an FID)")
    group.add_argument("--inception-weights", metavar="PATH", help="FID Inception weights file, if not cached")
    group.add_argument("--afd", choices=("auto", "yes", "no"), default="auto",
                       help="anime-face detection rate: auto = when the detector can be loaded, else n/a with "
                            "the reason (default); yes = fail if it cannot")
    group.add_argument("--detector", choices=("cascade", "yolo"), default="cascade", help="face detector for AFD")
    group.add_argument("--detector-weights", metavar="PATH", help="lbpcascade_animeface.xml, or the YOLO .pt")
    group.add_argument("--metrics-batch-size", type=int, default=50, help="images per feature batch (default 50)")
    group.add_argument("--kid-subsets", type=int, default=100, help="KID: random subsets to average (default 100)")
    group.add_argument("--kid-subset-size", type=int, default=1000,
                       help="KID: images per subset, capped by the smaller set (default 1000)")


def scoring_options(args: argparse.Namespace, device: torch.device):
    """ScoringOptions from the parsed flags, checked before any image is generated."""
    from difflab.experiments.scoring import ScoringOptions

    if args.metrics_batch_size < 1:
        raise ConfigError(f"--metrics-batch-size must be at least 1; got {args.metrics_batch_size}")
    if args.kid_subsets < 1 or args.kid_subset_size < 2:
        raise ConfigError("--kid-subsets must be at least 1 and --kid-subset-size at least 2")
    return ScoringOptions(features=args.features, inception_weights=args.inception_weights, afd=args.afd,
                          detector=args.detector, detector_weights=args.detector_weights, device=device,
                          batch_size=args.metrics_batch_size, kid_subsets=args.kid_subsets,
                          kid_subset_size=args.kid_subset_size, progress=not args.no_progress)
