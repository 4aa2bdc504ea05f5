"""The reward's params (params.yaml section `reward`) and the threshold modes of the labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from recap_data.config import Choice, Count, Int, NonNegative, Positive, check_fields, param

NORMALIZATIONS = ("global", "per_task")
THRESHOLDS = ("per_task", "global")  # label.threshold: one epsilon per task (the paper), or one over all frames
# The fields that define a value model's targets; n_steps only shapes the advantage, so a
# checkpoint may label with another n_steps than it was trained with.
TARGET_FIELDS = ("number_of_bins", "c_fail", "normalization", "reward_normalizer")


@dataclass(frozen=True)
class RewardConfig:
    """How returns are defined and binned (params.yaml section `reward`)."""

    number_of_bins: Int(2, 100_000) = param(201, "B equal-width bins over [-1, 0] for the distributional value")
    c_fail: NonNegative = param(1000.0, "cost of failing, charged at the last frame of a failed episode")
    normalization: Choice(*NORMALIZATIONS) = param(
        "per_task", "per_task: by each task's largest return magnitude; global")
    reward_normalizer: Positive = param(1600.0, "the divisor for `global` normalization")
    n_steps: Count = param(50, "look-ahead N of the n-step return used by the advantage")

    def __post_init__(self):  # 1000 and 1000.0 are the same config; store and compare floats
        object.__setattr__(self, "c_fail", float(self.c_fail))
        object.__setattr__(self, "reward_normalizer", float(self.reward_normalizer))

    def validate(self) -> RewardConfig:
        check_fields(self, "reward")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
