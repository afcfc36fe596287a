"""difflab: train, sample and evaluate image diffusion models on a folder of your own images."""

__version__ = "0.1.0"
