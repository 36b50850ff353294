"""The 8 symmetries of a square (the dihedral group D4): 4 rotations by 90°, each with or without a mirror.

A lesion patch has no preferred orientation in the axial plane, so a flipped or rotated training lesion
is as real as the original; with 60-180 training lesions, showing the discriminator the 8 orientations of
each is 8x the real data at no cost (issue #13: ``train.real_dihedral``). Unlike DiffAugment this touches
only the real batch, so the generator is asked to learn the symmetric distribution.

As in :mod:`augmentor.training.diffaugment`, the algorithm draws the symmetry of each sample from its own
``torch.Generator`` (per global sample, so data-parallel ranks agree) and :func:`dihedral` applies it, a
pure function of the batch and the drawn indices.
"""

from __future__ import annotations

import torch

NUM_SYMMETRIES = 8


def dihedral(pairs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apply symmetry ``index[b]`` in 0..7 to sample b of (B, C, S, S) square ``pairs``.

    Symmetry k mirrors the columns when k >= 4, then rotates by ``(k mod 4) x 90°`` counter-clockwise
    (:func:`torch.rot90` in the (H, W) plane); k = 0 is the identity. Image and mask channels move together.
    """
    if pairs.shape[-1] != pairs.shape[-2]:
        raise ValueError(f"dihedral symmetries need square samples, got {pairs.shape[-2]}x{pairs.shape[-1]}")
    select = index.view(-1, 1, 1, 1)
    mirrored = torch.where(select >= 4, pairs.flip(-1), pairs)
    turned = mirrored
    for quarter_turns in (1, 2, 3):
        turned = torch.where(select % 4 == quarter_turns, torch.rot90(mirrored, quarter_turns, dims=(-2, -1)), turned)
    return turned
