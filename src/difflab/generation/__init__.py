"""Generation: load a trained model, run a sampler over many images, write the files."""
from difflab.generation.generate import autocast_for, generate_images, run_sampler
from difflab.generation.model_io import LoadedModel, default_device, load_model
from difflab.generation.outputs import prepare_output_folder, write_numbered_images

__all__ = ["LoadedModel", "autocast_for", "default_device", "generate_images", "load_model",
           "prepare_output_folder", "run_sampler", "write_numbered_images"]
