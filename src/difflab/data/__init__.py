"""Image data for difflab: finding, decoding, caching, batching and augmenting images."""
from difflab.data.augment import augment_batch
from difflab.data.base import BaseImageDataset, TensorImageDataset
from difflab.data.batches import BatchStream, batch_indices
from difflab.data.builtin import BUILTIN_DATASETS, default_data_root, load_dataset
from difflab.data.dataset import CACHE_LIMIT_BYTES, ImageDataset
from difflab.data.files import IMAGE_EXTENSIONS, ImageRef, iter_images, list_images, read_image, try_read_image
from difflab.data.shapes import make_shapes
from difflab.data.transforms import detect_channels, is_grayscale, to_mode, to_square

__all__ = [
    "BUILTIN_DATASETS",
    "CACHE_LIMIT_BYTES",
    "IMAGE_EXTENSIONS",
    "BaseImageDataset",
    "BatchStream",
    "ImageDataset",
    "ImageRef",
    "TensorImageDataset",
    "augment_batch",
    "batch_indices",
    "default_data_root",
    "detect_channels",
    "is_grayscale",
    "iter_images",
    "list_images",
    "load_dataset",
    "make_shapes",
    "read_image",
    "to_mode",
    "to_square",
    "try_read_image",
]
