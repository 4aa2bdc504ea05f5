"""Does RECAP pay off, loop against loop? (not a test): prints a table per data regime and writes
bench/results/loops.json (one entry per regime; a run of some regimes keeps the others').

Fixed before any result was seen (2026-12-06), and kept: the regimes (world.demonstrators.REGIMES:
teleop, mixed, scarce), the arms, the budgets and the comparisons below. Per regime, on the
pipeline's params (params.yaml: base data of 100 demonstrations of the moka-pot task, the tiny
models, 2,000 policy steps of 16, 1,000 value steps of 32), for each training seed:
  sft        BC on the demonstrations, indicator always positive (where both loops start)
  recap      the pipeline's loop, 2 iterations: roll out the previous policy (100 episodes),
             fine-tune the value model from value-pre on base + every rollout so far, label at
             30% positive per task, fine-tune the policy from SFT with the indicator
  fbc loop   iterated filtered BC: each iteration rolls out the previous fbc policy (100
             episodes; the first iteration shares SFT's rollouts with recap) and fine-tunes from
             SFT on every successful episode so far, indicator always positive (baselines.
             BASELINES["filtered_bc"]), same steps
  single-shot arms, trained from scratch on base + SFT's rollouts (the old bench_recap arms):
             bc (every frame), fbc (successful episodes), recap (the loop's first label set)
Evaluation: every policy on the same 100 episodes per training seed from the `test` initial
states (200-299), which nothing is tuned on; recap at beta 1 and at the guidance beta chosen on
the `validation` split (the final recap policies at beta 1.5 and 2.5 against beta 1, the best
mean success over seeds wins); the beta 0 check (recap without its indicator). Reported per arm:
success (mean over seeds with a t interval, pooled Wilson), throughput (successes per 1,000 steps,
pooled over seeds' episodes, delta-method interval), mean steps of a success, per seed. The value
model (each seed's first fine-tune) on held-out SFT rollouts: MAE of the labels' value (the mean of
its distribution) and of its median, against the best constant, an MLP on the state (median and
mean predictors, common.value_bounds) and an outcome oracle; the AUC of V(o_0) for success.
value-pre is trained once per regime (seed 0); the training seeds vary the policies, rollouts and
value fine-tuning.

    .venv/bin/python bench/bench_loops.py [--regimes teleop,mixed,scarce] [--seeds 3] [--work DIR]

With `--params pipelines/params-pi05.yaml` the same loops run with tiny pi0.5 (every other
setting as params.yaml); results are keyed `<regime>-pi05` beside pi0's `<regime>`.
"""

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from common import (
    auc,
    git_commit,
    machine_info,
    mean_interval,
    parse_resumable,
    read_results,
    value_bounds,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "loops.json"
ITERATIONS = 2
BETAS = (1.0, 1.5, 2.5)  # guidance candidates for recap, chosen on the validation split
TARGETS = {"recap_minus_fbc_loop_points": 5.0, "recap_over_fbc_loop_throughput": 1.15,
           "recap_minus_sft_points": 15.0, "recap_over_sft_throughput": 1.30}


class Regime:
    """One regime's store, models and configs; every step is skipped when its output exists, so a
    run that stopped resumes where it was."""

    def __init__(self, name: str, work: Path, params: Path, rollouts: int):
        from recap_data.config import load_config
        from recap_data.data.base_data import BaseDataConfig
        from recap_data.label_math.config import AdvantageConfig, RewardConfig
        from recap_data.labels.write import LabelConfig
        from recap_data.policy.train import PolicyTrainConfig
        from recap_data.sim.evaluate import EvalConfig
        from recap_data.sim.rollout import RolloutConfig
        from recap_data.store.shard_index import MixtureConfig
        from recap_data.store.store import ShardStore
        from recap_data.value.train import ValueTrainConfig

        self.base = load_config(BaseDataConfig, params, {"regime": name})
        self.reward = load_config(RewardConfig, params)
        self.value = load_config(ValueTrainConfig, params)
        self.policy = load_config(PolicyTrainConfig, params)
        # results and work are keyed by regime, and by family where it is not pi0 (params-pi05.yaml)
        self.regime = name
        self.name = name if self.policy.type == "pi0" else f"{name}-{self.policy.type}"
        self.work, self.models = work / self.name, work / self.name / "models"
        self.store = ShardStore(self.work / "data")
        self.labels = load_config(LabelConfig, params)
        self.advantage = load_config(AdvantageConfig, params)
        self.mixture = load_config(MixtureConfig, params)
        self.rollout = replace(load_config(RolloutConfig, params), episodes=rollouts)
        self.eval = load_config(EvalConfig, params)
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    def timed(self, name: str, done: bool, fn):
        if done:
            return
        t = time.perf_counter()
        fn()
        self.timings[name] = round(time.perf_counter() - t, 1)
        print(f"[{self.name} {time.perf_counter() - self.started:6.0f} s] {name}: {self.timings[name]} s", flush=True)

    def shard(self, shard: str, policy: Path, seed: int) -> None:
        from recap_data.sim.rollout import rollout

        self.timed(shard, self.store.exists(shard), lambda: rollout(
            self.store, shard, str(policy), replace(self.rollout, seed=seed).validate(), progress=False))

    def index(self, name: str, shards: list[str]) -> dict[str, float]:
        from recap_data.store.shard_index import write_index

        entries = write_index(self.store, self.work / f"index-{name}.json", shards, self.mixture)
        return {e["id"]: e["weight"] for e in entries}

    def train(self, out: Path, mixture: dict, labels: str | None, init: Path | None, **changes) -> Path:
        from recap_data.policy.train import train_policy

        cfg = replace(self.policy, **changes).validate()
        self.timed(out.name, out.exists(), lambda: train_policy(self.store, mixture, labels, out, cfg, init=init,
                                                                progress=False))
        return out

    def value_and_labels(self, name: str, mixture: dict, value=None, pre: str = "value-pre") -> str:
        """Fine-tune the value model `pre` on `mixture` (with `value`, default the params') and label
        those shards as `name`."""
        from recap_data.labels.infer import label
        from recap_data.value.train import train_value

        ckpt = self.models / f"value-{name}"
        self.timed(ckpt.name, ckpt.exists(), lambda: train_value(
            self.store, mixture, ckpt, value or self.value, self.reward, init=self.models / pre, progress=False))
        self.timed(f"label {name}", (self.store.root / "labels" / name).exists(), lambda: label(
            self.store, list(mixture), ckpt, name, self.reward, self.labels, self.advantage, progress=False))
        return name

    def cached(self, name: str, fn) -> dict:
        """fn()'s JSON result, kept in the work directory so that a resumed run does not redo it."""
        cache = self.work / "cache" / f"{name}.json"
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(fn()))
        return json.loads(cache.read_text())

    def evaluate(self, policy: Path, seed: int, split: str, beta: float, episodes: int) -> dict:
        """One policy on the split's episodes of this training seed; cached beside the models (not in
        the checkpoint, whose digest the rollouts recorded)."""
        from recap_data.sim.evaluate import evaluate

        cfg = replace(self.eval, episodes=episodes, split=split, seed=1000 + seed, guidance=beta).validate()
        return self.cached(f"eval-{policy.name}-{split}-beta{beta:g}-n{episodes}",
                           lambda: evaluate(self.store, str(policy), cfg, progress=False))


def base_and_value_pre(r: Regime) -> None:
    """What every seed stands on: the base shard and value-pre (trained once per regime, seed 0)."""
    from recap_data.data.base_data import make_base
    from recap_data.value.train import train_value

    r.timed("base", r.store.exists("base"), lambda: make_base(r.store, r.base, progress=False))
    r.timed("value-pre", (r.models / "value-pre").exists(), lambda: train_value(
        r.store, {"base": 1.0}, r.models / "value-pre", r.value, r.reward, progress=False))


def sft(r: Regime, seed: int) -> Path:
    return r.train(r.models / f"sft-s{seed}", {"base": 1.0}, None, None, indicator_mode="on", seed=seed)


def loop_data(r: Regime, loop: str, seed: int, k: int, policy: Path, shards: list[str]) -> dict:
    """Iteration k of a loop: roll out its previous policy (the first iteration's rollouts are SFT's,
    one shard for both loops) and index base plus every rollout so far (appended to `shards`)."""
    shard = f"sft-rollouts-s{seed}" if k == 1 else f"{loop}-rollouts-s{seed}-it{k}"
    r.shard(shard, policy, seed=100 * seed + k)
    shards.append(shard)
    return r.index(f"{loop}-s{seed}-it{k}", shards)


def single_shot(r: Regime, seed: int, policies: dict) -> None:
    """The old bench_recap arms, from scratch on base + SFT's rollouts: bc (every frame), fbc (the
    successful episodes), recap (the loop's first label set)."""
    data = r.index(f"single-s{seed}", ["base", f"sft-rollouts-s{seed}"])
    for arm, labels, changes in (("bc", None, {"indicator_mode": "ignore"}),
                                 ("fbc", None, {"indicator_mode": "ignore", "successes_only": True}),
                                 ("recap", f"recap-s{seed}-it1", {"indicator_mode": "use"})):
        policies.setdefault(f"single-shot {arm}", {})[seed] = r.train(
            r.models / f"single-{arm}-s{seed}", data, labels, None, seed=seed, **changes)


def run_single_shot(r: Regime, args) -> dict:
    """Only the single-shot arms, and what they stand on (SFT, its rollouts, the loop's first label
    set, all built as run_regime builds them), for a regime whose loops ran without them."""
    base_and_value_pre(r)
    policies: dict[str, dict[int, Path]] = {}
    for seed in range(args.seeds):
        r.value_and_labels(f"recap-s{seed}-it1", loop_data(r, "recap", seed, 1, sft(r, seed), ["base"]))
        single_shot(r, seed, policies)
    arms = {arm: summarize_arm([r.evaluate(p, s, "test", 1.0, args.episodes) for s, p in by_seed.items()])
            for arm, by_seed in policies.items()}
    return {"arms": arms, "timings_s": r.timings}


def run_regime(r: Regime, args) -> dict:
    from recap_data.labels.infer import label
    from recap_data.store.label_sets import read_labels

    base_and_value_pre(r)
    policies: dict[str, dict[int, Path]] = {}
    heldout, bounds = [], []
    for seed in range(args.seeds):
        policies.setdefault("sft", {})[seed] = first = sft(r, seed)
        recap, fbc, recap_shards, fbc_shards = first, first, ["base"], ["base"]
        for k in range(1, ITERATIONS + 1):
            mixture = loop_data(r, "recap", seed, k, recap, recap_shards)
            labels = r.value_and_labels(f"recap-s{seed}-it{k}", mixture)
            recap = r.train(r.models / f"recap-s{seed}-it{k}", mixture, labels, first, indicator_mode="use",
                            seed=seed)
            policies.setdefault(f"recap it{k}", {})[seed] = recap
            fbc = r.train(r.models / f"fbc-loop-s{seed}-it{k}", loop_data(r, "fbc", seed, k, fbc, fbc_shards), None,
                          first, baseline="filtered_bc", seed=seed)
            policies.setdefault(f"fbc loop it{k}", {})[seed] = fbc
        if args.single_shot:
            single_shot(r, seed, policies)
        # held-out rollouts of SFT (other seeds) for the AUC of V(o_0) of the first value model
        held = f"sft-heldout-s{seed}"
        r.shard(held, first, seed=100 * seed + 99)
        r.timed(f"label {held}", (r.store.root / "labels" / held).exists(), lambda h=held, s=seed: label(
            r.store, [h], r.models / f"value-recap-s{s}-it1", h, r.reward, r.labels, r.advantage,
            progress=False))
        heldout.append(read_labels(r.store, held))
        bounds.append(r.cached(f"value-bounds-s{seed}", lambda h=heldout[-1], s=seed: value_bounds(
            r.store, read_labels(r.store, f"recap-s{s}-it1"), h, r.base.first_task, s,
            value_ckpt=r.models / f"value-recap-s{s}-it1")))

    # The guidance beta for the final recap policies, chosen on the validation split alone.
    final = f"recap it{ITERATIONS}"
    on_validation = {beta: [r.evaluate(p, s, "validation", beta, args.episodes)["success_rate"]
                            for s, p in policies[final].items()] for beta in BETAS}
    beta = max(BETAS, key=lambda b: (float(np.mean(on_validation[b])), -b))
    plan = {"sft": ("sft", 1.0), **{f"recap it{k}": (f"recap it{k}", 1.0) for k in range(1, ITERATIONS + 1)},
            f"recap it{ITERATIONS} beta*": (final, beta), f"recap it{ITERATIONS} beta 0 (check)": (final, 0.0),
            **{f"fbc loop it{k}": (f"fbc loop it{k}", 1.0) for k in range(1, ITERATIONS + 1)},
            **({f"single-shot {a}": (f"single-shot {a}", 1.0) for a in ("bc", "fbc", "recap")}
               if args.single_shot else {})}
    arms = {arm: summarize_arm([r.evaluate(p, s, "test", b, args.episodes) for s, p in policies[key].items()])
            for arm, (key, b) in plan.items()}
    start = np.concatenate([h[h["frame_index"] == 0]["value"].to_numpy() for h in heldout])
    won = np.concatenate([h[h["frame_index"] == 0]["success"].to_numpy(bool) for h in heldout])
    values = [json.loads((r.models / f"value-recap-s{s}-it{k}" / "metrics.json").read_text())["holdout"]
              for s in range(args.seeds) for k in range(1, ITERATIONS + 1)]
    data = {s: {k: getattr(r.store.manifest(s), k) for k in ("episodes", "frames", "successes")}
            for s in r.store.shard_ids()}
    return {"regime": r.regime, "policy_type": r.policy.type, "shares": r.base.shares(), "guidance_chosen": beta,
            "guidance_on_validation": {f"{b:g}": round(float(np.mean(v)), 4) for b, v in on_validation.items()},
            "arms": arms, "comparisons": compare(arms, f"recap it{ITERATIONS} beta*", f"fbc loop it{ITERATIONS}"),
            "value": {"heldout_mae_mean": round(float(np.mean([v["value_mae"] for v in values])), 4),
                      "heldout_constant_mae_mean": round(float(np.mean([v["constant_mae"] for v in values])), 4),
                      "mae_ratio_mean": round(float(np.mean([v["constant_mae"] / v["value_mae"] for v in values])), 3),
                      "heldout_median_mae_mean": round(float(np.mean([v["value_median_mae"] for v in values])), 4),
                      "heldout_rollouts_mae_mean": {k: round(float(np.mean([b[k] for b in bounds])), 4)
                                                    for k in bounds[0]},
                      "auc_v0_heldout_sft_rollouts": None if np.isnan(v0 := auc(start, won)) else round(v0, 4),
                      "heldout_episodes": int(len(start))},
            "data": data, "timings_s": r.timings}


def summarize_arm(runs: list[dict]) -> dict:
    """One arm over its training seeds: success mean with t interval, pooled Wilson; pooled
    throughput with its interval; mean steps of a success; per seed."""
    from recap_data.sim.evaluate import outcome_metrics

    pooled = outcome_metrics([o for m in runs for o in m["outcomes"]], [n for m in runs for n in m["lengths"]])
    return {"success_mean_ci95_over_seeds": [round(v, 4) for v in mean_interval([m["success_rate"] for m in runs])],
            "success_pooled": pooled["success_rate"], "success_pooled_wilson95": pooled["success_ci95"],
            "throughput_pooled": pooled["throughput"], "throughput_pooled_ci95": pooled["throughput_ci95"],
            "success_steps_pooled": pooled["success_steps"], "episodes_per_seed": runs[0]["episodes"],
            "per_seed": {"success": [m["success_rate"] for m in runs], "throughput": [m["throughput"] for m in runs],
                         "success_steps": [m["success_steps"] for m in runs]}}


def compare(arms: dict, recap: str, fbc: str) -> dict:
    """RECAP's final policy against the final iterated filtered BC and against SFT: differences,
    whether the pooled intervals are apart, and whether every seed has the same sign."""
    out = {}
    for other in (fbc, "sft"):
        a, b = arms[recap], arms[other]
        seeds_success = [x - y for x, y in zip(a["per_seed"]["success"], b["per_seed"]["success"], strict=True)]
        seeds_tput = [x - y for x, y in zip(a["per_seed"]["throughput"], b["per_seed"]["throughput"], strict=True)]
        out[f"vs {other}"] = {
            "success_points": round(100 * (a["success_pooled"] - b["success_pooled"]), 1),
            "success_intervals_apart": a["success_pooled_wilson95"][0] > b["success_pooled_wilson95"][1],
            "success_same_sign_every_seed": all(d > 0 for d in seeds_success),
            "throughput_ratio": round(a["throughput_pooled"] / b["throughput_pooled"], 3)
            if b["throughput_pooled"] else None,
            "throughput_intervals_apart": a["throughput_pooled_ci95"][0] > b["throughput_pooled_ci95"][1],
            "throughput_same_sign_every_seed": all(d > 0 for d in seeds_tput)}
    return out


def add_loop_arguments(parser: argparse.ArgumentParser, regimes: str) -> None:
    """The options of a benchmark over Regime: which regimes, training seeds, evaluation episodes,
    rollouts and params."""
    parser.add_argument("--regimes", default=regimes)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy, seed and split")
    parser.add_argument("--rollouts", type=int, default=100, help="rollout episodes per iteration")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")


def run_facts(args: argparse.Namespace) -> dict:
    """What a regime's entry records of the run beside its figures."""
    return {"machine": machine_info(), "seeds": args.seeds, "episodes": args.episodes, "rollouts": args.rollouts,
            "params": str(args.params), "commit": git_commit()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loop_arguments(parser, "teleop,mixed,scarce")
    parser.add_argument("--no-single-shot", dest="single_shot", action="store_false",
                        help="leave out the single-shot arms (bc, fbc, recap from scratch)")
    parser.add_argument("--only-single-shot", action="store_true",
                        help="run only the single-shot arms and add them to the regime's entry in --results")
    args = parse_resumable(parser, RESULTS, "bench-loops-")
    results = read_results(args.results)
    for name in args.regimes.split(","):
        r = Regime(name, args.work, args.params, args.rollouts)  # r.name: the regime's key in the results
        if args.only_single_shot:
            add_single_shot(results, r, args)
        else:
            results["regimes"][r.name] = {**run_regime(r, args), **run_facts(args)}
            results["targets"] = TARGETS
        print_regime(results["regimes"][r.name])
        write_results(args.results, results)


def add_single_shot(results: dict, r: Regime, args) -> None:
    """The single-shot arms, run in a later sitting, added to the regime's entry with their commit."""
    entry = results["regimes"].get(r.name)
    if entry is None or (entry["seeds"], entry["episodes"], entry["rollouts"]) != (
            args.seeds, args.episodes, args.rollouts):
        raise SystemExit(f"error: {args.results}: no '{r.name}' entry with these seeds, episodes and rollouts to add "
                         f"the single-shot arms to; run bench/bench_loops.py --regimes {r.regime} first")
    shot = run_single_shot(r, args)
    entry["arms"].update(shot["arms"])
    entry["single_shot"] = {"commit": git_commit(), "machine": machine_info(), "timings_s": shot["timings_s"]}


def print_regime(entry: dict) -> None:
    print(f"\n{entry['regime']} ({entry.get('policy_type', 'pi0')}) {entry['shares']}: "
          f"guidance chosen on validation {entry['guidance_chosen']:g} "
          f"({entry['guidance_on_validation']})")
    print(f"{'arm':30s} {'success, mean [95% CI over seeds]':34s} {'pooled Wilson':16s} "
          f"{'throughput /1k steps [95% CI]':30s} steps of a success")
    for arm, a in entry["arms"].items():
        m, lo, hi = a["success_mean_ci95_over_seeds"]
        wl, wh = a["success_pooled_wilson95"]
        tl, th = a["throughput_pooled_ci95"]
        print(f"{arm:30s} {m:.3f} [{lo:.3f}, {hi:.3f}]{'':14s} [{wl:.3f}, {wh:.3f}]   "
              f"{a['throughput_pooled']:6.2f} [{tl:.2f}, {th:.2f}]{'':12s} {a['success_steps_pooled']}")
    for name, c in entry["comparisons"].items():
        print(f"recap {name}: {c}")
    print(f"value: {entry['value']}")


if __name__ == "__main__":
    main()
