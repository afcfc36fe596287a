"""Results as plain dicts (for --json) and as a readable two-column table.

Every result names what it was measured with, so a number read months later still
says whether it is an FID (FID Inception) or an FD in some other feature space.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from typing import Sequence

from difflab import __version__
from difflab.metrics.extractors import Extractor
from difflab.metrics.kid import KernelDistance
from difflab.metrics.nearest import Match

_MAX_LISTED_UNREADABLE = 5


def distance_result(extractor: Extractor, value: float | None, error: str | None = None) -> dict:
    """Under the key "fid" only for the FID Inception, "fd" otherwise; `error` says why it is missing."""
    key = extractor.distance_name.lower()
    result = {"extractor": extractor.name, key: value}
    if error:
        result[f"{key}_error"] = error
    return result


def kid_result(kid: KernelDistance) -> dict:
    return {
        "mean": kid.mean,
        "std": kid.std,
        "num_subsets": kid.num_subsets,
        "subset_size": kid.subset_size,
    }


def afd_result(detector_name: str, faces_found: Sequence[bool], reference_found: Sequence[bool] | None = None) -> dict:
    result = {
        "detector": detector_name,
        "rate": _fraction(faces_found),
        "num_with_face": int(sum(faces_found)),
        "num_images": len(faces_found),
    }
    if reference_found is not None:
        result["reference_rate"] = _fraction(reference_found)
    return result


def nearest_result(matches: Sequence[Match], copies: Sequence[Match], threshold: float, image_path: str | None) -> dict:
    return {
        "pixel_distance": "RMS over 32x32 RGB thumbnails, in [0, 1]",
        "copy_threshold": threshold,
        "num_near_copies": len(copies),
        "closest_pixel_distance": min(m.pixel_distance for m in matches),
        "median_pixel_distance": statistics.median(m.pixel_distance for m in matches),
        "median_feature_distance": statistics.median(m.feature_distance for m in matches),
        "image": image_path,
        "near_copies": [_match_dict(m) for m in copies],
        "matches": [_match_dict(m) for m in matches],
    }


def with_header(results: dict) -> dict:
    return {"difflab_version": __version__, **results}


def write_json(path: str | os.PathLike, results: dict) -> None:
    with open(path, "w") as file:
        json.dump(with_header(results), file, indent=2)
        file.write("\n")


def format_table(results: dict) -> str:
    """The results a person reads: one metric a line, labels aligned."""
    rows: list[tuple[str, str]] = []
    for role in ("generated", "images", "reference"):
        if role in results:
            rows.append((role, _describe_set(results[role])))
    if "extractor" in results:
        rows.append(("features", results["extractor"]))
    for key in ("fid", "fd"):
        if key in results:
            value = results[key]
            rows.append((key.upper(), f"not computed: {results[f'{key}_error']}" if value is None else f"{value:.4f}"))
    if "kid" in results:
        kid = results["kid"]
        if kid is None:  # eval: too few images, say why
            rows.append(("KID", f"not computed: {results['kid_error']}"))
        else:
            subsets = f"{kid['num_subsets']} subsets of {kid['subset_size']}"
            rows.append(("KID", f"{kid['mean']:.5f} ± {kid['std']:.5f} ({subsets})"))
    if "afd" in results:
        rows.append(("AFD rate", _describe_afd(results["afd"])))
    if "nearest" in results:
        rows.append(("near copies", _describe_nearest(results["nearest"])))
    for note in results.get("notes", []):
        rows.append(("note", note))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _describe_set(summary: dict) -> str:
    text = f"{summary['source']}: {summary['num_images']:,} images" if summary.get("num_images") else summary["source"]
    if summary.get("statistics_from") in ("file", "cache"):
        text += f" (statistics from {summary['statistics_from']})"
    unreadable = summary.get("unreadable") or []
    if unreadable:
        listed = ", ".join(entry["image"] for entry in unreadable[:_MAX_LISTED_UNREADABLE])
        more = "" if len(unreadable) <= _MAX_LISTED_UNREADABLE else ", ..."
        text += f"; skipped {len(unreadable)} unreadable: {listed}{more}"
    return text


def _describe_afd(afd: dict) -> str:
    text = f"{afd['rate']:.1%} ({afd['num_with_face']}/{afd['num_images']})"
    if "reference_rate" in afd:
        text += f", real images: {afd['reference_rate']:.1%}"
    return f"{text}; {afd['detector']}"


def _describe_nearest(nearest: dict) -> str:
    text = (
        f"{nearest['num_near_copies']} under {nearest['copy_threshold']} RMS pixel distance; "
        f"closest {nearest['closest_pixel_distance']:.3f}, median {nearest['median_pixel_distance']:.3f}"
    )
    return text + (f" (pairs in {nearest['image']})" if nearest.get("image") else "")


def _match_dict(match: Match) -> dict:
    return {
        "generated": str(match.generated),
        "pixel_neighbour": str(match.pixel_neighbour),
        "pixel_distance": match.pixel_distance,
        "feature_neighbour": str(match.feature_neighbour),
        "feature_distance": match.feature_distance,
    }


def _fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan

