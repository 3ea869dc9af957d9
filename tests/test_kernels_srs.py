"""The robust-sigmoid kernels' constant is scipy's value."""

from __future__ import annotations

import numpy as np
from scipy import special

from atlas_engine.kernels.srs import IQR_NORMAL_SCALE


def test_iqr_normal_scale_is_scipys():
    assert IQR_NORMAL_SCALE == float(2.0 * np.sqrt(2.0) * special.erfinv(0.5))
