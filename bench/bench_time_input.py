"""Post hoc: does the value model's time input change what RECAP's labels buy? (not a test)
Prints a table and writes bench/results/time_input.json.

Added 2026-12-07, after the loop results (bench_loops.py) were seen: there RECAP lost to filtered
BC in the mixed and scarce regimes, its value model fell short of an MLP on the state, and
`value.time_input` (the frame's index as one more state input) brought the value model's error
down on held-out rollouts (docs/results.md). This asks the next question on the policy: in one
sitting, on the same data, seeds and budgets as bench_loops' single-shot RECAP arm (base + SFT's
rollouts, the policy trained from scratch with the indicator, evaluated at beta 1 on 100 `test`
episodes per seed), two arms that differ only in the value model behind the labels:
  recap               value-pre and its fine-tune as params.yaml has them (the loop's labels)
  recap (time input)  the same two trainings with value.time_input on
Both value models are fine-tuned on base + SFT's rollouts and label the same frames at 30%
positive per task. Reported per arm as bench_loops reports one, the difference with its
per-seed signs, and per seed how far the two label sets differ (frames with the same indicator,
correlations of value and advantage). Regime and arms fixed before this ran; it is one more look, not a new benchmark.

    .venv/bin/python bench/bench_time_input.py [--regimes mixed] [--seeds 3] [--work DIR]
"""

import argparse
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_loops import Regime, add_loop_arguments, base_and_value_pre, loop_data, run_facts, sft, summarize_arm
from common import parse_resumable, read_results, write_results

RESULTS = Path(__file__).parent / "results" / "time_input.json"
ARMS = ("recap", "recap (time input)")


def run(r: Regime, args) -> dict:
    from recap_data.value.train import train_value

    base_and_value_pre(r)
    timed = replace(r.value, time_input=True)
    r.timed("value-pre-time", (r.models / "value-pre-time").exists(), lambda: train_value(
        r.store, {"base": 1.0}, r.models / "value-pre-time", timed, r.reward, progress=False))
    policies: dict[str, dict[int, Path]] = {arm: {} for arm in ARMS}
    for seed in range(args.seeds):
        first = loop_data(r, "recap", seed, 1, sft(r, seed), ["base"])  # SFT, its rollouts: as in the loops
        labels = {"recap": r.value_and_labels(f"recap-s{seed}-it1", first),
                  "recap (time input)": r.value_and_labels(f"recap-time-s{seed}-it1", first, timed, "value-pre-time")}
        data = r.index(f"single-s{seed}", ["base", f"sft-rollouts-s{seed}"])  # as bench_loops.single_shot
        for arm in ARMS:
            out = r.models / f"single-{arm.replace(' (time input)', '-time')}-s{seed}"
            policies[arm][seed] = r.train(out, data, labels[arm], None, seed=seed, indicator_mode="use")
    arms = {arm: summarize_arm([r.evaluate(p, s, "test", 1.0, args.episodes) for s, p in by_seed.items()])
            for arm, by_seed in policies.items()}
    agreement = [label_agreement(r, f"recap-s{seed}-it1", f"recap-time-s{seed}-it1") for seed in range(args.seeds)]
    a, b = (arms[arm] for arm in ARMS[::-1])
    seeds = [x - y for x, y in zip(a["per_seed"]["success"], b["per_seed"]["success"], strict=True)]
    difference = {"success_points": round(100 * (a["success_pooled"] - b["success_pooled"]), 1),
                  "per_seed_points": [round(100 * d, 1) for d in seeds],
                  "throughput_ratio": round(a["throughput_pooled"] / b["throughput_pooled"], 3)
                  if b["throughput_pooled"] else None}
    return {"arms": arms, "time_input_minus_recap": difference, "labels_per_seed": agreement, "timings_s": r.timings}


def label_agreement(r: Regime, a: str, b: str) -> dict:
    """How far two label sets of the same frames differ: the share of frames with the same
    indicator, and the correlations of their values and advantages."""
    from recap_data.store.db import connect

    x, y = (connect(r.store.root, labels=name).sql(
        'SELECT indicator, value, advantage FROM labels ORDER BY shard, "index"').df() for name in (a, b))
    assert len(x) == len(y), f"{a} and {b} label different frames"
    return {"frames": len(x), "same_indicator": round(float((x["indicator"] == y["indicator"]).mean()), 4),
            "value_corr": round(float(x["value"].corr(y["value"])), 4),
            "advantage_corr": round(float(x["advantage"].corr(y["advantage"])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_loop_arguments(parser, "mixed")
    args = parse_resumable(parser, RESULTS, "bench-time-input-")
    results = read_results(args.results)
    for name in args.regimes.split(","):
        r = Regime(name, args.work, args.params, args.rollouts)
        entry = {**run(r, args), **run_facts(args)}
        results["regimes"][r.name] = entry
        for arm, m in entry["arms"].items():
            lo, hi = m["success_pooled_wilson95"]
            print(f"{r.name} {arm}: success {m['success_pooled']:.3f} [{lo:.3f}, {hi:.3f}], per seed "
                  f"{m['per_seed']['success']}, throughput {m['throughput_pooled']:.2f}")
        print(f"{r.name} time input minus recap: {entry['time_input_minus_recap']}")
        write_results(args.results, results)


if __name__ == "__main__":
    main()
