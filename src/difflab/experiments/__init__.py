"""Experiments on a trained model: progressive generation, image fusion, the DDPM-versus-DDIM
study and the HTML report. Each builds on the samplers and generation helpers rather than
re-implementing them: snapshots come from the sampler callback, images from generate_images."""
