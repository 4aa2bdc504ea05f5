"""The docs blocks of the model-level readings beside the loop benchmark: the tiny policies' SFT
budget (bench_policy_budget.py), the value model's inputs (bench_value_inputs.py) and what its
time input changes in RECAP's policy (bench_time_input.py)."""

from tables_common import interval
from tables_loops import BOUNDS

STATE_TIME_MLP = ("state_time_mlp_mae", "the median MLP on state and time alone (no distances: those need the scene)")


def policy_budget(r: dict) -> str:
    """bench_policy_budget.py (bench/results/policy_budget.json): SFT of each tiny family by steps."""
    rows = [f"| family | steps (batch {r['runs'][0]['batch_size']}) | success on validation [Wilson 95%] "
            "| throughput per 1,000 steps [95%] | final training loss | action MSE on training frames "
            "(states shuffled) | training time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for x in r["runs"]:
        rows.append(f"| {x['family']} | {x['steps']:,} | {x['success']:.2f} {interval(x['success_wilson95'])} | "
                    f"{x['throughput']:.2f} [{x['throughput_ci95'][0]:.2f}, {x['throughput_ci95'][1]:.2f}] | "
                    f"{x['final_loss']:.3f} | {x['action_mse']:.3f} ({x['action_mse_state_shuffled']:.3f}, "
                    f"{x['action_mse_state_shuffled'] / x['action_mse']:.2f}x) | {x['train_wall_s']:.0f} s |")
    m = r["machine"]
    head = (f"{r['regime']} base shard, seed {r['seed']}, {r['episodes']} `{r['split']}` episodes per policy; "
            f"action MSE over {r['probe_frames']} training frames (the frames' mean action: "
            f"{r['runs'][0]['mean_action_mse']:.3f}); commit {r['commit']}, {m['cpus']} CPU cores:")
    return "\n".join([head, "", *rows])


def value_inputs(r: dict) -> str:
    """bench_value_inputs.py (bench/results/value_inputs.json): the value model with and without the
    frame index, on held-out SFT rollouts, per regime."""
    rows = ["| regime (held-out rollouts) | predictor | MAE on held-out rollouts (x: the constant's over it) "
            "| AUC of V(o_0) | MAE on held-out training episodes (constant) |", "| --- | --- | --- | --- | --- |"]
    for name, e in r["regimes"].items():
        h = e["heldout"]
        where = f"{name} ({h['episodes']} episodes, {h['successes']} successes)"
        for arm, a in e["arms"].items():
            m, t = a["heldout_rollouts_mae"], a["heldout_training_episodes"]
            rows.append(f"| {where} | value model, {arm}: mean / median | {m['value_model_mae']:.4f} "
                        f"({a['mae_ratio_to_constant']:.2f}x) / {m['value_model_median_mae']:.4f} "
                        f"({a['median_mae_ratio_to_constant']:.2f}x) | {a['auc_v0']} | "
                        f"{t['value_mae']:.4f} ({t['constant_mae']:.4f}) |")
        m = next(iter(e["arms"].values()))["heldout_rollouts_mae"]
        for key, label in (*BOUNDS[2:4], STATE_TIME_MLP, *BOUNDS[4:]):
            rows.append(f"| {where} | {label} | {m[key]:.4f} ({m['constant_mae'] / m[key]:.2f}x) | | |")
    first = next(iter(r["regimes"].values()))
    head = (f"Training seed {first['seed']} per regime (one seed: a development reading); commit "
            f"{first['commit']}, {first['machine']['cpus']} CPU cores:")
    return "\n".join([head, "", *rows])


def time_input(r: dict) -> str:
    """bench_time_input.py (bench/results/time_input.json): the single-shot RECAP arm with labels from
    the params' value model and from the same with value.time_input, per regime."""
    rows = ["| regime | arm | success, pooled [Wilson 95%] | mean over seeds [t 95%] | per seed | throughput "
            "per 1,000 steps [95%] | steps of a success |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in r["regimes"].items():
        for arm, a in e["arms"].items():
            mean, lo, hi = a["success_mean_ci95_over_seeds"]
            t_lo, t_hi = a["throughput_pooled_ci95"]
            steps = "no success" if a["success_steps_pooled"] is None else f"{a['success_steps_pooled']:.1f}"
            rows.append(f"| {name} | {arm} | {a['success_pooled']:.3f} {interval(a['success_pooled_wilson95'])} | "
                        f"{mean:.3f} [{lo:.3f}, {hi:.3f}] | {', '.join(f'{x:.2f}' for x in a['per_seed']['success'])} "
                        f"| {a['throughput_pooled']:.2f} [{t_lo:.2f}, {t_hi:.2f}] | {steps} |")
        d = e["time_input_minus_recap"]
        ratio = "" if d["throughput_ratio"] is None else f"{d['throughput_ratio']:.3f}x"
        rows.append(f"| {name} | difference (time input minus recap) | {d['success_points']:+.1f} points | | "
                    f"{', '.join(f'{x:+.0f}' for x in d['per_seed_points'])} points | {ratio} | |")
    first = next(iter(r["regimes"].values()))
    head = (f"{first['seeds']} training seeds, {first['episodes']} `test` episodes per policy and seed, beta 1; "
            f"commit {first['commit']}, {first['machine']['cpus']} CPU cores:")
    labels = [f"{name}: the same indicator on {', '.join(f'{x['same_indicator']:.1%}' for x in e['labels_per_seed'])} "
              f"of the frames; value correlation {', '.join(f'{x['value_corr']:.2f}' for x in e['labels_per_seed'])}; "
              f"advantage correlation {', '.join(f'{x['advantage_corr']:.2f}' for x in e['labels_per_seed'])}"
              for name, e in r["regimes"].items()]
    return "\n".join([head, "", *rows, "", "The two label sets, seed by seed: " + "; ".join(labels) + "."])
