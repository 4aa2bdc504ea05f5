"""How many SFT steps does each tiny policy family need on the teleop base? (not a test): prints a
table and writes bench/results/policy_budget.json.

Why: in bench_loops.py the tiny pi0.5 (pipelines/params-pi05.yaml) reaches 0.047 test success
after SFT at the 2,000 steps of 16 fixed for pi0, which reaches 0.973. This sweep was added
after seeing that result (2026-12-07) to choose pi0.5's budget; its grid was fixed before it ran:
  pi0   2,000 steps (the budget every benchmark uses: the reference row)
  pi05  2,000, 4,000 and 8,000 steps
each SFT (BC on the teleop base shard of params.yaml, indicator always positive, batch 16, the
preset's lr) trained from scratch with seed 0, evaluated on 100 episodes of the `validation`
initial states (100-199), never the `test` ones, so that the choice leaves the test split alone.
Reported per run: success with its Wilson interval, throughput (successes per 1,000 steps), the
final training loss (mean of the last logged steps), the training wall time, and a reading of how
much the policy uses the state: the MSE of its first n_action_steps actions (one chunk, guidance
1) against the demonstrations' on 64 training frames, beside the same with the states shuffled
across those frames and beside the MSE of the frames' mean action. (pi0 projects the state into
its action expert; pi0.5 reads it only as 256-bin numbers in its prompt, tokens the tiny model
learns from scratch. Added with this sweep, after the 2,000-step result.)

    .venv/bin/python bench/bench_policy_budget.py [--work DIR]
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from bench_loops import Regime
from common import git_commit, machine_info, parse_resumable, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "policy_budget.json"
GRID = {"pi0": (ROOT / "params.yaml", (2000,)),
        "pi05": (ROOT / "pipelines" / "params-pi05.yaml", (2000, 4000, 8000))}
EPISODES = 100
SEED = 0
PROBE_FRAMES = 64


def state_reliance(r: Regime, ckpt: Path) -> dict:
    """Action MSE on PROBE_FRAMES training frames: as they are, with the states shuffled among them,
    and of their mean action (normalization-free units: the data's)."""
    import torch

    from recap_data.policy.data import PolicyFrames, load_policy_data
    from recap_data.policy.model import RecapPolicy
    from recap_data.store.schema import STATE_KEY, camera_keys

    torch.manual_seed(SEED)
    policy = RecapPolicy.load(ckpt)
    data = load_policy_data(r.store, {"base": 1.0}, None, "on")
    frames = PolicyFrames(r.store, data, camera_keys(r.store.manifest("base").features), policy.config.chunk_size)
    items = [frames[int(i)] for i in np.random.default_rng(SEED).choice(len(frames), PROBE_FRAMES, replace=False)]
    obs = {k: torch.stack([x[k] for x in items]) for k in items[0] if k.startswith("observation")}  # (B, ...)
    n = policy.config.n_action_steps
    target = torch.stack([x["action"] for x in items])[:, :n]  # (B, n, A)
    tasks = [x["task"] for x in items]

    def mse(observation) -> float:
        return round(float(((policy.predict_chunk(observation, tasks)[:, :n] - target) ** 2).mean()), 4)

    shuffled = {**obs, STATE_KEY: obs[STATE_KEY][torch.randperm(PROBE_FRAMES)]}
    return {"action_mse": mse(obs), "action_mse_state_shuffled": mse(shuffled),
            "mean_action_mse": round(float(((target - target.mean((0, 1))) ** 2).mean()), 4)}


def main() -> None:
    from recap_data.data.base_data import make_base

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_resumable(parser, RESULTS, "bench-budget-")
    runs = []
    for family, (params, budgets) in GRID.items():
        r = Regime("teleop", args.work, params, rollouts=0)
        r.timed("base", r.store.exists("base"), lambda r=r: make_base(r.store, r.base, progress=False))
        for steps in budgets:
            ckpt = r.train(r.models / f"sft-{steps}", {"base": 1.0}, None, None, indicator_mode="on", seed=SEED,
                           steps=steps)
            trained = json.loads((ckpt / "metrics.json").read_text())
            m = r.evaluate(ckpt, SEED, "validation", 1.0, EPISODES)
            runs.append({"family": family, "steps": steps, "batch_size": r.policy.batch_size, "lr": r.policy.lr,
                         "success": m["success_rate"], "success_wilson95": m["success_ci95"],
                         "throughput": m["throughput"], "throughput_ci95": m["throughput_ci95"],
                         "success_steps": m["success_steps"], "final_loss": trained["final_loss"],
                         "train_wall_s": trained["wall_s"],
                         **r.cached(f"state-reliance-{ckpt.name}", lambda r=r, c=ckpt: state_reliance(r, c))})
            print(json.dumps(runs[-1]), flush=True)
    print(f"\n{'family':6s} {'steps':>6s} {'success [Wilson 95%]':24s} {'throughput':>10s} "
          f"{'final loss':>10s} {'train s':>8s} {'action MSE (state shuffled)':>28s}")
    for x in runs:
        lo, hi = x["success_wilson95"]
        print(f"{x['family']:6s} {x['steps']:6d} {x['success']:.3f} [{lo:.3f}, {hi:.3f}]{'':4s} "
              f"{x['throughput']:10.2f} {x['final_loss']:10.4f} {x['train_wall_s']:8.0f} "
              f"{x['action_mse']:17.4f} ({x['action_mse_state_shuffled']:.4f})")
    write_results(args.results, {"split": "validation", "episodes": EPISODES, "seed": SEED, "regime": "teleop",
                                 "probe_frames": PROBE_FRAMES,
                                 "runs": runs, "machine": machine_info(),
                                 "commit": git_commit()})


if __name__ == "__main__":
    main()
