"""Training: losses, DiffAugment, EMA, one class per algorithm (cGAN, WGAN-GP), the generic loop, recipes.

This package's ``__init__`` imports nothing, so loading a recipe (``augmentor.training.recipe``) does not
import torch. Entry point: :func:`augmentor.training.run.train`.
"""
