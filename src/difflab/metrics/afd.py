"""AFD rate: the fraction of images in which an anime-face detector finds at least one face.

A cheap, interpretable check for anime-face generators: blobs and melted faces are not
detected. The detector misses some real faces too, so a generated rate is read against
the detector's rate on the real set (`difflab afd REAL`), never against 100%.

Two detectors:
- `cascade` (default): nagadomi's LBP cascade `lbpcascade_animeface.xml` via OpenCV,
  with his README's parameters (scaleFactor 1.1, minNeighbors 5, minSize 24x24) on the
  plain grayscale image. His README also equalises the histogram first; that costs
  1.5 to 3 points of real-face rate here, and without it the rate on the first 2,000
  64 px faces of ../shared/data (archive order) is 89.2%, the reference figure of
  about 89% (86.8% with equalisation). The rate depends on which faces are measured:
  all 20,000 give 93.8% (92.0% equalised), the 96 px set 90.8% (89.5%), CIFAR-10
  test images 0 of 10,000. OpenCV 5 dropped CascadeClassifier, hence
  opencv-python-headless < 5.
- `yolo`: an ultralytics YOLO anime-face model supplied by the user (the homework's
  yolov8x6_animeface.pt with conf 0.8, iou 0.8, imgsz 64).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from difflab.data.files import ImageRef
from difflab.errors import OPTION, ConfigError
from difflab.metrics.weights import RemoteFile, locate

ANIMEFACE_CASCADE = RemoteFile(
    filename="lbpcascade_animeface.xml",
    url="https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml",
    sha256="9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30",
    option="detector_weights",
    env_var="DIFFLAB_ANIMEFACE_CASCADE",
)
DETECTORS = ("cascade", "yolo")
_OPENCV_HINT = "pip install 'difflab[afd]' (that is, opencv-python-headless<5)"


class FaceDetector(Protocol):
    name: str  # reported with every rate, with its parameters

    def detect(self, images: Sequence[Image.Image]) -> list[int]:
        """The number of faces found in each RGB image."""
        ...


class CascadeDetector:
    """OpenCV's cascade classifier with nagadomi's anime-face cascade."""

    def __init__(
        self,
        cascade_path: str | os.PathLike,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        equalize_histogram: bool = False,
    ) -> None:
        self._cv2 = _import_opencv()
        self._cascade = self._cv2.CascadeClassifier(str(cascade_path))
        if self._cascade.empty():
            raise ConfigError(f"{OPTION}: OpenCV could not load a cascade from {cascade_path}",
                              option="detector_weights")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.equalize_histogram = equalize_histogram
        self.name = (
            f"lbpcascade_animeface (OpenCV {self._cv2.__version__}; scaleFactor {scale_factor}, "
            f"minNeighbors {min_neighbors}, minSize {min_size}"
            f"{', equalizeHist' if equalize_histogram else ''})"
        )

    def detect(self, images: Sequence[Image.Image]) -> list[int]:
        return [self._count_faces(image) for image in images]

    def _count_faces(self, image: Image.Image) -> int:
        gray = self._cv2.cvtColor(np.asarray(image.convert("RGB")), self._cv2.COLOR_RGB2GRAY)
        if self.equalize_histogram:
            gray = self._cv2.equalizeHist(gray)
        faces = self._cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return len(faces)


class YoloDetector:
    """An ultralytics YOLO face model; only available where ultralytics is installed."""

    def __init__(
        self,
        weights: str | os.PathLike,
        conf: float = 0.8,
        iou: float = 0.8,
        imgsz: int = 64,
        device: str | None = None,
    ) -> None:
        try:
            from ultralytics import YOLO
        except ImportError as error:
            raise ConfigError("{option} yolo needs ultralytics: pip install ultralytics", option="detector") from error
        self._model = YOLO(str(weights))
        self._options = dict(conf=conf, iou=iou, imgsz=imgsz, verbose=False, device=device)
        self.name = f"yolo {os.path.basename(weights)} (conf {conf}, iou {iou}, imgsz {imgsz})"

    def detect(self, images: Sequence[Image.Image]) -> list[int]:
        results = self._model.predict([image.convert("RGB") for image in images], **self._options)
        return [len(result.boxes) for result in results]


def load_detector(
    kind: str = "cascade", weights: str | os.PathLike | None = None, device: str | None = None
) -> FaceDetector:
    """`--detector cascade` (weights: the .xml; found or downloaded if not given)
    or `--detector yolo` (weights: the .pt, required)."""
    if kind == "cascade":
        _import_opencv()  # before a possible download, so a missing OpenCV is the first thing reported
        return CascadeDetector(locate(ANIMEFACE_CASCADE, weights))
    if kind == "yolo":
        if weights is None:
            raise ConfigError("{option} yolo needs {option:detector_weights} PATH.pt (e.g. yolov8x6_animeface.pt)",
                              option="detector")
        return YoloDetector(weights, device=device)
    raise ConfigError(f"{OPTION} must be one of {', '.join(DETECTORS)}, got {kind!r}", option="detector")


def _import_opencv():
    try:
        import cv2
    except ImportError as error:
        raise ConfigError(f"the anime-face cascade needs OpenCV: {_OPENCV_HINT}") from error
    if not hasattr(cv2, "CascadeClassifier"):
        raise ConfigError(f"OpenCV {cv2.__version__} has no CascadeClassifier (removed in 5.0): {_OPENCV_HINT}")
    return cv2


def opencv_available() -> bool:
    try:
        _import_opencv()
    except ConfigError:
        return False
    return True


@dataclass
class FaceCounter:
    """A scan consumer that records, per image, whether the detector found a face."""

    detector: FaceDetector

    def __post_init__(self) -> None:
        self.found: list[bool] = []

    def add(self, refs: Sequence[ImageRef], images: Sequence[Image.Image]) -> None:
        self.found.extend(count > 0 for count in self.detector.detect(images))

    @property
    def rate(self) -> float:
        return sum(self.found) / len(self.found) if self.found else float("nan")
