"""The B equal-width bins over [-1, 0] that the distributional value model predicts: a normalized
return's bin (the training target) and a predicted distribution's value (its mean, as labels use,
or its median)."""

import numpy as np

from recap_data.errors import RecapError

ROUNDING = 1e-9  # float slack at the ends of [-1, 0]; anything further out is an error


def bin_edges(number_of_bins: int) -> np.ndarray:
    """The B+1 edges of the bins over [-1, 0]; bin b is [edge_b, edge_b+1), the last one closed."""
    return np.linspace(-1.0, 0.0, number_of_bins + 1)


def bin_centres(number_of_bins: int) -> np.ndarray:
    """The value each bin stands for when decoding: the midpoint of the same edges the targets use."""
    edges = bin_edges(number_of_bins)
    return (edges[:-1] + edges[1:]) / 2


def return_bins(normalized: np.ndarray, number_of_bins: int) -> np.ndarray:
    """Bin index of normalized returns in [-1, 0]; a value outside (beyond rounding) is an error.
    (kernels.per_frame computes the same index inline, frame by frame.)"""
    normalized = np.asarray(normalized, dtype=np.float64)
    if normalized.size and (normalized.min() < -1 - ROUNDING or normalized.max() > ROUNDING):
        raise RecapError(f"normalized returns must lie in [-1, 0], got [{normalized.min()}, {normalized.max()}]")
    index = np.floor((normalized + 1.0) * number_of_bins).astype(np.int64)
    # Only the two ends are clamped: 0 belongs to the last bin (closed interval), -1-1e-12 to the first.
    return np.clip(index, 0, number_of_bins - 1)


def decode_values(probabilities, number_of_bins: int):
    """Continuous value sum_b p(b) v_b from bin probabilities (..., B); numpy or torch."""
    centres = bin_centres(number_of_bins)
    if hasattr(probabilities, "new_tensor"):  # torch: keep device and dtype
        return probabilities @ probabilities.new_tensor(centres)
    return np.asarray(probabilities) @ centres


def decode_medians(probabilities, number_of_bins: int):
    """The median bin's value (...,) from bin probabilities (..., B); torch. Labels use the mean
    (decode_values: V is an expectation); the median is what minimises absolute error, so held-out
    MAE is reported for both, beside the best constant (a median) and median predictors."""
    centres = probabilities.new_tensor(bin_centres(number_of_bins))
    below = (probabilities.cumsum(-1) < 0.5).sum(-1)  # (...,): bins whose cumulative mass is under half
    return centres[below.clamp(max=number_of_bins - 1)]
