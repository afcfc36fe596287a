"""Confident-class rate: how many generated images a fixed classifier is sure about.

A cheap quality check for class-structured data (digits): a recognisable sample gets
one class with high probability, a blurry or hybrid one does not. Reported together
with how many distinct classes the confident samples cover, so mode collapse shows."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ConfidentClassRate:
    rate: float                 # fraction of images with max class probability >= threshold
    classes_covered: int        # distinct classes among those confident images
    class_counts: list[int]     # confident images per class
    threshold: float
    num_images: int


@torch.no_grad()
def confident_class_rate(classifier: nn.Module, images: torch.Tensor, threshold: float = 0.9,
                         batch_size: int = 256) -> ConfidentClassRate:
    """`images` are floats in [0, 1], (N, C, H, W); `classifier(x)` returns class logits."""
    device = next(classifier.parameters()).device
    probabilities = torch.cat([torch.softmax(classifier(batch.to(device)).float(), dim=1).cpu()
                               for batch in images.split(batch_size)])
    confidence, label = probabilities.max(dim=1)
    confident = confidence >= threshold
    counts = torch.bincount(label[confident], minlength=probabilities.shape[1]).tolist()
    return ConfidentClassRate(rate=confident.float().mean().item(), classes_covered=sum(c > 0 for c in counts),
                              class_counts=counts, threshold=threshold, num_images=len(images))


def load_classifier(spec: str, device: str = "cpu", option: str = "digits") -> nn.Module:
    """A digit classifier from FILE.py:FUNCTION (e.g. ../shared/eval/featnet.py:mnist), loaded the
    way --features loads a feature network; `classifier(images in [0, 1])` returns class logits."""
    from difflab.errors import ConfigError
    from difflab.metrics.extractors import _call_factory, _split_spec
    try:
        network = _call_factory(*_split_spec(spec))
    except ConfigError as error:
        raise ConfigError(error.message.replace("'inception' or ", ""), option=option) from None
    return network.to(device).eval()


def folder_digit_rate(classifier: nn.Module, folder: str, image_size: int) -> dict:
    """The confident-class rate of the (grayscale) images in `folder`, as a JSON-ready record."""
    from difflab.data import load_dataset
    images = load_dataset(folder, image_size=image_size, channels=1, cache=False, progress=False)
    batch = torch.stack([images[i] for i in range(len(images))]).float() / 255
    score = confident_class_rate(classifier, batch)
    return {"rate": score.rate, "classes_covered": score.classes_covered, "class_counts": score.class_counts,
            "threshold": score.threshold, "num_images": score.num_images}
