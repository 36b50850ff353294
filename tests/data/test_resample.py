"""Anti-aliased resampling of whole slices: flat regions keep their HU, detail above the new Nyquist is removed."""

from __future__ import annotations

import numpy as np
import pytest

from augmentor.data.resample import output_size_for_spacing, resample_slices, resampling_matrix
from augmentor.errors import AugmentorError


@pytest.mark.parametrize(("size_in", "size_out"), [(64, 32), (100, 37), (48, 48), (30, 45)])
def test_flat_slices_keep_their_hu_and_rows_sum_to_one(size_in: int, size_out: int) -> None:
    weights = resampling_matrix(size_in, size_out)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    flat = np.full((2, size_in, size_in), 57.0)
    np.testing.assert_allclose(resample_slices(flat, (size_out, size_out)), 57.0, atol=1e-3)


def test_shrinking_removes_detail_above_the_new_nyquist() -> None:
    # A checkerboard at the input's Nyquist frequency is pure aliasing once the grid is halved: plain
    # decimation keeps it at full strength (every other pixel is all "high"), the anti-aliased shrink does not.
    rows, columns = np.mgrid[:64, :64]
    board = 100.0 * ((rows + columns) % 2)
    decimated = board[::2, ::2]
    assert decimated.std() == 0 and decimated.mean() in (0.0, 100.0)  # aliased to a wrong flat level
    shrunk = resample_slices(board, (32, 32))
    assert abs(float(shrunk[4:-4, 4:-4].mean()) - 50.0) < 1.0 and shrunk[4:-4, 4:-4].std() < 1.0
    # Detail below the new Nyquist survives: a 16-pixel-period stripe keeps most of its contrast.
    stripes = 100.0 * np.sin(2 * np.pi * columns / 16.0)
    assert resample_slices(stripes, (32, 32))[:, 4:-4].std() > 0.8 * stripes.std()


def test_field_of_view_is_kept_and_bad_sizes_are_refused() -> None:
    assert output_size_for_spacing(512, 0.7, 1.4) == 256
    assert output_size_for_spacing(300, 0.8, 1.0) == 240
    with pytest.raises(AugmentorError, match="positive"):
        output_size_for_spacing(10, 0.0, 1.0)
    with pytest.raises(AugmentorError, match="resample"):
        resampling_matrix(0, 4)
