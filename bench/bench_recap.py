"""Does RECAP work? A controlled comparison in the embedded world (not a test): prints a table and
writes bench/results/recap.json.

Same data for every arm: the pipeline's base shard (params.yaml `base`: one task) in the mixed
regime (70% of the demonstrations succeed; the pipeline's default was mixed when this was
measured, and bench_loops.py compares the regimes) plus 100 rollouts of an SFT policy (BC on
the base shard, indicator always positive). Same model (the tiny pi0), same steps and batch
size, trained from scratch, for each of the training seeds:
  bc        every frame, indicator ignored
  fbc       filtered BC: frames of successful episodes only
  recap     value model (pre-trained on the base shard, fine-tuned on base + rollouts), labels at
            30% positive per task, indicator with dropout 0.3; evaluated on "Advantage: positive"
            (beta 1) and with classifier-free guidance at beta 1.5 and 2.5
Each policy is evaluated on the embedded world's `test` initial states (200-299, never used by
the pipeline, by development or by any training data) with evaluation seeds of their own.
Reported per arm: mean success over seeds with a 95% interval (t over seeds), the pooled Wilson
interval, mean episode length; and the value model's quality: held-out value MAE against the
best constant's, and the AUC of V(o_0) for predicting success on held-out rollouts.
Two readings that are not arms:
  recap beta 0     the RECAP policies without the indicator (the unconditional model): if
                   "Advantage: positive" did not change the actions, it would score as beta 1
  value bounds     on the held-out rollouts, what other predictors of the return reach: one
                   told the episode's outcome (a bound no observation-based model can beat),
                   and an MLP on the world's full state, time and distances to goal and decoy
                   (what the observation can tell at all, without images)

    .venv/bin/python bench/bench_recap.py [--seeds 3] [--episodes 100] [--work DIR]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import yaml
from common import auc, machine_info, mean_interval, value_bounds, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "recap.json"
ARMS = {"bc": {"indicator_mode": "ignore"}, "fbc": {"indicator_mode": "ignore", "successes_only": True},
        "recap": {"indicator_mode": "use"}}
GUIDANCE = {"bc": (1.0,), "fbc": (1.0,), "recap": (1.0, 1.5, 2.5, 0.0)}  # beta 0: unconditional, a check


def main() -> None:
    from recap_data.config import load_config
    from recap_data.data.base_data import BaseDataConfig, make_base
    from recap_data.label_math.config import AdvantageConfig, RewardConfig
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.policy.train import PolicyTrainConfig, train_policy
    from recap_data.sim.evaluate import EvalConfig, evaluate, wilson_interval
    from recap_data.sim.rollout import RolloutConfig, rollout
    from recap_data.store.label_sets import read_labels
    from recap_data.store.shard_index import MixtureConfig, write_index
    from recap_data.store.store import ShardStore
    from recap_data.value.train import ValueTrainConfig, train_value

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy and seed")
    parser.add_argument("--rollouts", type=int, default=100, help="SFT rollouts added to the base data")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-recap-"))
    store, models = ShardStore(work / "data"), work / "models"
    params = args.params
    reward = load_config(RewardConfig, params)
    value_cfg = load_config(ValueTrainConfig, params)
    policy_cfg = load_config(PolicyTrainConfig, params)
    label_cfg = load_config(LabelConfig, params)
    advantage = load_config(AdvantageConfig, params)
    mixture_cfg = load_config(MixtureConfig, params)
    rollout_cfg = load_config(RolloutConfig, params)
    eval_cfg = load_config(EvalConfig, params)
    started = time.perf_counter()
    timings = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"[{time.perf_counter() - started:7.0f} s] {name}: {timings[name]} s", flush=True)
        return out

    # The data every arm trains on: base + rollouts of the SFT policy (and held-out rollouts for the AUC).
    # the mixed regime (70% of demonstrations succeed), as when its results were measured
    base_cfg = load_config(BaseDataConfig, params, {"regime": "mixed"})
    timed("base", lambda: make_base(store, base_cfg, progress=False))
    sft = models / "sft"
    if not sft.exists():
        timed("sft", lambda: train_policy(store, {"base": 1.0}, None, sft,
                                          _replace(policy_cfg, indicator_mode="on"), progress=False))
    for shard, seed in (("sft-rollouts", 1), ("sft-rollouts-heldout", 99)):
        if not store.exists(shard):
            timed(shard, lambda s=shard, k=seed: rollout(store, s, str(sft), _replace(
                rollout_cfg, episodes=args.rollouts, seed=k), progress=False))
    index = write_index(store, work / "index.json", ["base", "sft-rollouts"], mixture_cfg)  # the pipeline's weights
    mixture = {e["id"]: e["weight"] for e in index}

    # The value model and the labels (RECAP's arm only uses them).
    if not (models / "value-pre").exists():
        timed("value-pre", lambda: train_value(store, {"base": 1.0}, models / "value-pre", value_cfg, reward,
                                               progress=False))
    if not (models / "value").exists():
        timed("value", lambda: train_value(store, mixture, models / "value", value_cfg, reward,
                                           init=models / "value-pre", progress=False))
    value_metrics = json.loads((models / "value" / "metrics.json").read_text())["holdout"]
    if not (store.root / "labels" / "bench").exists():
        timed("label", lambda: label(store, list(mixture), models / "value", "bench", reward, label_cfg,
                                     advantage, progress=False))
    if not (store.root / "labels" / "heldout").exists():
        timed("label-heldout", lambda: label(store, ["sft-rollouts-heldout"], models / "value", "heldout", reward,
                                             label_cfg, advantage, progress=False))
    held = read_labels(store, "heldout")
    start = held[held["frame_index"] == 0]
    value_auc = auc(start["value"].to_numpy(), start["success"].to_numpy(bool))
    bounds = timed("value bounds", lambda: value_bounds(store, read_labels(store, "bench"), held,
                                                        int(rollout_cfg.task), value_ckpt=models / "value"))

    # The arms.
    runs = []
    for seed in range(args.seeds):
        for arm, overrides in ARMS.items():
            out = models / f"{arm}-seed{seed}"
            if not out.exists():
                timed(f"{arm} seed {seed}", lambda o=out, a=arm, v=overrides, s=seed: train_policy(
                    store, mixture, "bench" if a == "recap" else None, o, _replace(policy_cfg, seed=s, **v),
                    progress=False))
            trained = json.loads((out / "metrics.json").read_text())
            for beta in GUIDANCE[arm]:
                m = evaluate(store, str(out), _replace(eval_cfg, episodes=args.episodes, split="test",
                                                       seed=1000 + seed, guidance=beta), progress=False)
                runs.append({"arm": arm if beta == 1.0 else f"{arm} beta {beta:g}", "seed": seed, "guidance": beta,
                             "successes": m["successes"], "episodes": m["episodes"],
                             "success_rate": m["success_rate"], "mean_episode_length": m["mean_episode_length"],
                             "prompt_fractions": trained["prompt_fractions"], "final_loss": trained["final_loss"]})
                print(f"  {runs[-1]['arm']:16s} seed {seed}: {m['success_rate']:.2f} "
                      f"(length {m['mean_episode_length']:.1f})", flush=True)

    arms = {}
    for name in dict.fromkeys(r["arm"] for r in runs):
        rs = [r for r in runs if r["arm"] == name]
        mean, low, high = mean_interval([r["success_rate"] for r in rs])
        k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        arms[name] = {"success_mean": round(mean, 4), "success_ci95_over_seeds": [round(low, 4), round(high, 4)],
                      "success_pooled_wilson95": [round(v, 4) for v in wilson_interval(k, n)],
                      "per_seed": [r["success_rate"] for r in rs], "episodes_per_seed": rs[0]["episodes"],
                      "mean_episode_length": round(float(np.mean([r["mean_episode_length"] for r in rs])), 2)}
    best = max((a for a in arms if a.startswith("recap") and a != "recap beta 0"),
               key=lambda a: arms[a]["success_mean"])
    results = {
        "machine": machine_info(), "seeds": args.seeds, "eval_split": "test", "params": str(params),
        "data": {s: {k: getattr(store.manifest(s), k) for k in ("episodes", "frames", "successes")}
                 for s in ("base", "sft-rollouts")},
        "mixture": mixture, "policy_steps": policy_cfg.steps, "policy_batch_size": policy_cfg.batch_size,
        "value": {"heldout_value_mae": value_metrics["value_mae"],
                  "heldout_constant_mae": value_metrics["constant_mae"],
                  "mae_ratio": round(value_metrics["constant_mae"] / value_metrics["value_mae"], 3),
                  "auc_v0_heldout_rollouts": round(value_auc, 4), "heldout_rollout_episodes": len(start),
                  "bounds_on_heldout_rollouts": {k: round(v, 4) for k, v in bounds.items()}},
        "arms": arms, "best_recap_arm": best,
        "best_recap_minus_bc": round(arms[best]["success_mean"] - arms["bc"]["success_mean"], 4),
        "best_recap_minus_fbc": round(arms[best]["success_mean"] - arms["fbc"]["success_mean"], 4),
        "targets": {"best_recap_minus_bc": 0.20, "best_recap_minus_fbc": 0.05, "mae_ratio": 3.0},
        "runs": runs, "timings_s": timings, "config": yaml.safe_load(Path(params).read_text()),
    }
    print(f"\n{'arm':16s} {'success (mean, 95% CI over seeds)':36s} {'pooled Wilson':16s} length")
    for name, a in arms.items():
        lo, hi = a["success_ci95_over_seeds"]
        wl, wh = a["success_pooled_wilson95"]
        print(f"{name:16s} {a['success_mean']:.3f} [{lo:.3f}, {hi:.3f}]{'':14s} [{wl:.3f}, {wh:.3f}]   "
              f"{a['mean_episode_length']:.1f}")
    v = results["value"]
    print(f"value: held-out MAE {v['heldout_value_mae']:.4f} vs constant {v['heldout_constant_mae']:.4f} "
          f"({v['mae_ratio']}x), AUC of V(o_0) on {v['heldout_rollout_episodes']} held-out rollouts "
          f"{v['auc_v0_heldout_rollouts']:.3f}")
    print("MAE on the held-out rollouts: " + ", ".join(f"{k[:-4]} {b:.4f}" for k, b in bounds.items()))
    print(f"best RECAP arm {best}: {results['best_recap_minus_bc']:+.3f} vs BC, "
          f"{results['best_recap_minus_fbc']:+.3f} vs filtered BC")
    write_results(RESULTS, results)


def _replace(cfg, **changes):
    from dataclasses import replace

    return replace(cfg, **changes).validate()


if __name__ == "__main__":
    main()
