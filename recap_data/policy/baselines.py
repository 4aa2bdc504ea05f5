"""The baseline arms a run can train beside RECAP on the same data (params.yaml `baselines`, the
`baseline` field of `train policy`, bench/bench_loops.py): each name stands for the policy
settings it fixes. A module of its own, so that what only reads the names (the pipeline's
summary) does not depend on the trainer's code.

  filtered_bc  the SFT recipe (indicator always positive, with its dropout) on the successful
               episodes only; iterated over each round's data, this is rejection-sampling
               fine-tuning, the baseline RECAP has to beat when every demonstration succeeds
"""

BASELINES = {"filtered_bc": {"successes_only": True, "indicator_mode": "on"}}
