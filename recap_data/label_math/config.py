"""The label math's params: the reward (params.yaml section `reward`: how returns are defined and
binned, what a value model is trained on) and the advantage (section `advantage`: its look-ahead
and how it becomes the indicator, which a label set may change without retraining anything)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from recap_data.config import ADVANTAGE_FROM, Choice, Count, Float, Int, NonNegative, Positive, check_fields, param

NORMALIZATIONS = ("global", "per_task")
THRESHOLDS = ("per_task", "global")  # advantage.threshold: one epsilon per task (the paper), or one over all frames
# The fields that define a value model's targets (all of RewardConfig's).
TARGET_FIELDS = ("number_of_bins", "c_fail", "normalization", "reward_normalizer")


@dataclass(frozen=True)
class RewardConfig:
    """How returns are defined and binned."""

    section = "reward"  # its params.yaml section (a class attribute, not a field)

    number_of_bins: Int(2, 100_000) = param(201, "B equal-width bins over [-1, 0] for the distributional value")
    c_fail: NonNegative = param(1000.0, "cost of failing, charged at the last frame of a failed episode")
    normalization: Choice(*NORMALIZATIONS) = param(
        "per_task", "per_task: by each task's largest return magnitude; global")
    reward_normalizer: Positive = param(1600.0, "the divisor for `global` normalization")

    def __post_init__(self):  # 1000 and 1000.0 are the same config; store and compare floats
        object.__setattr__(self, "c_fail", float(self.c_fail))
        object.__setattr__(self, "reward_normalizer", float(self.reward_normalizer))

    def validate(self) -> RewardConfig:
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def stored_reward(values: dict) -> dict:
    """A reward dict as a value checkpoint or label set stored it, without the fields that have
    moved to the advantage since (n_steps, stored by versions before the `advantage` section)."""
    return {k: v for k, v in values.items() if ADVANTAGE_FROM.get(k) != "reward"}


@dataclass(frozen=True)
class AdvantageConfig:
    """How the advantage is computed and becomes the indicator:
    A_t = (n-step return over N) + V(o_{t+N}) - V(o_t), indicator = A_t > epsilon, epsilon set so
    that positive_fraction of the frames (of each task, or of all) are positive."""

    section = "advantage"  # its params.yaml section (a class attribute, not a field)

    n_steps: Count = param(50, "look-ahead N of the n-step return used by the advantage")
    positive_fraction: Float(0, 1, low_open=True, high_open=True) = param(
        0.3, "target fraction of frames with A_t > epsilon")
    threshold: Choice(*THRESHOLDS) = param(
        "per_task", "per_task: one epsilon per task (the paper); global: one over all frames")

    def validate(self) -> AdvantageConfig:
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)
