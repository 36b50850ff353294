"""Phantom -> CT translation: the ``cyclegan`` recipe kind, training a CycleGAN model directory,
``augment translate`` and the safety scores that travel with every translated file."""
