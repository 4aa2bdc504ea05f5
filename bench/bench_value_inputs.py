"""Does the value model read what a state MLP reads? (not a test): prints a table per data regime and
writes bench/results/value_inputs.json.

The loop benchmark (bench_loops.py) finds the tiny value model 1.12x-1.89x better than the best
constant on held-out rollouts, where an MLP on the state, the time and the distances to goal
and decoy reaches 1.51x-2.51x. One input the MLP has and the value model lacks is the time (the
frame's index in its episode), which decides a capped episode's return once the robot is late.
This benchmark (added 2026-12-07, after those results; its regimes, arms and budgets fixed
before it ran) trains the value model with and without `time_input`, as the RECAP loop's first
iteration does, and scores both on the same held-out rollouts:

Per regime (teleop, mixed, scarce; params.yaml otherwise), training seed 0 (one seed: a
development reading, not a loop result):
  data       the base shard, SFT's 100 rollouts (the loop's first iteration's), and 100
             held-out SFT rollouts with other seeds (what both models are scored on)
  arms       value model as params.yaml has it; the same with time_input; each pre-trained on
             the base shard and fine-tuned on base + SFT's rollouts (1,000 steps of 32 each)
  readings   MAE of the labels' value (the predicted mean) and of the predicted median on the
             held-out rollouts, beside the best constant, the state MLP (median and mean
             predictors) and the outcome oracle (bench/common.predictor_bounds); the AUC of V(o_0)
             for success; the MAE on the held-out training episodes (train value's metrics);
             and, added after the first run showed time_input changing little, the median MLP
             on the state and time alone, without the distances to goal and decoy (which the
             value model can only read from its cameras)

    .venv/bin/python bench/bench_value_inputs.py [--regimes teleop,mixed,scarce] [--work DIR]
"""

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from bench_loops import Regime, sft
from common import (
    auc,
    git_commit,
    machine_info,
    parse_resumable,
    predictor_bounds,
    read_results,
    value_model_errors,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "value_inputs.json"
SEED = 0
ARMS = {"state": False, "state + time": True}  # arm -> time_input


def run_regime(name: str, args) -> dict:
    from recap_data.data.base_data import make_base
    from recap_data.labels.infer import label
    from recap_data.store.label_sets import read_labels
    from recap_data.value.train import train_value

    r = Regime(name, args.work, ROOT / "params.yaml", rollouts=100)
    r.timed("base", r.store.exists("base"), lambda: make_base(r.store, r.base, progress=False))
    first = sft(r, SEED)
    r.shard(f"sft-rollouts-s{SEED}", first, seed=100 * SEED + 1)  # the loop's first iteration's rollouts
    held = f"sft-heldout-s{SEED}"
    r.shard(held, first, seed=100 * SEED + 99)
    mixture = r.index(f"value-s{SEED}", ["base", f"sft-rollouts-s{SEED}"])
    arms, predictors = {}, None
    for arm, time_input in ARMS.items():
        key = "time" if time_input else "state"
        cfg = replace(r.value, time_input=time_input).validate()
        pre, tuned = r.models / f"value-pre-{key}", r.models / f"value-{key}-s{SEED}"
        r.timed(pre.name, pre.exists(), lambda c=cfg, p=pre: train_value(
            r.store, {"base": 1.0}, p, c, r.reward, progress=False))
        r.timed(tuned.name, tuned.exists(), lambda c=cfg, p=pre, t=tuned: train_value(
            r.store, mixture, t, c, r.reward, init=p, progress=False))
        for labels, shards in ((f"train-{key}", list(mixture)), (f"held-{key}", [held])):
            r.timed(f"label {labels}", (r.store.root / "labels" / labels).exists(), lambda n=labels, s=shards, t=tuned:
                    label(r.store, s, t, n, r.reward, r.labels, r.advantage, progress=False))
        scored = read_labels(r.store, f"held-{key}")
        if predictors is None:  # they read states, times and returns, the same in both arms' label sets
            predictors = r.cached("bounds-predictors", lambda k=key, h=scored: predictor_bounds(
                r.store, read_labels(r.store, f"train-{k}"), h, r.base.first_task, SEED))
        bounds = {**predictors, **r.cached(f"bounds-value-{key}", lambda t=tuned, h=scored: value_model_errors(
            r.store, h, t))}
        first = scored[scored["frame_index"] == 0]
        v0 = auc(first["value"].to_numpy(), first["success"].to_numpy(bool))
        holdout = json.loads((tuned / "metrics.json").read_text())["holdout"]
        constant = bounds["constant_mae"]
        arms[arm] = {"time_input": time_input, "heldout_rollouts_mae": {k: round(v, 4) for k, v in bounds.items()},
                     "mae_ratio_to_constant": round(constant / bounds["value_model_mae"], 3),
                     "median_mae_ratio_to_constant": round(constant / bounds["value_model_median_mae"], 3),
                     "auc_v0": None if np.isnan(v0) else round(v0, 4),
                     "heldout_training_episodes": {k: round(holdout[k], 4) for k in
                                                   ("value_mae", "value_median_mae", "constant_mae")}}
    manifest = r.store.manifest(held)
    return {"regime": name, "shares": r.base.shares(), "seed": SEED, "arms": arms,
            "heldout": {"episodes": manifest.episodes, "successes": manifest.successes, "frames": manifest.frames},
            "timings_s": r.timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", default="teleop,mixed,scarce")
    args = parse_resumable(parser, RESULTS, "bench-value-inputs-")
    results = read_results(args.results)
    for name in args.regimes.split(","):
        entry = run_regime(name, args)
        results["regimes"][name] = {**entry, "machine": machine_info(),
                                    "commit": git_commit()}
        print(f"\n{name} {entry['shares']}: held-out SFT rollouts {entry['heldout']}")
        for arm, a in entry["arms"].items():
            print(f"  {arm:14s} value MAE {a['heldout_rollouts_mae']['value_model_mae']:.4f} "
                  f"({a['mae_ratio_to_constant']:.2f}x the constant), median "
                  f"{a['heldout_rollouts_mae']['value_model_median_mae']:.4f} "
                  f"({a['median_mae_ratio_to_constant']:.2f}x); state MLP "
                  f"{a['heldout_rollouts_mae']['state_mlp_mae']:.4f}; constant "
                  f"{a['heldout_rollouts_mae']['constant_mae']:.4f}; AUC V(o_0) {a['auc_v0']}")
        write_results(args.results, results)


if __name__ == "__main__":
    main()
