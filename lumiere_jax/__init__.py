"""Lumiere in JAX/Flax NNX: space-time U-Net video diffusion and its applications."""
