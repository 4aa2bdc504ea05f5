"""The docs blocks of bench_recap.py's results (bench/results/recap.json)."""

from tables_common import verdict

ARM_NAMES = {"bc": "BC (every frame, indicator ignored)", "fbc": "filtered BC (successful episodes only)",
             "recap": 'RECAP, "Advantage: positive" (beta 1)', "recap beta 1.5": "RECAP, guidance beta 1.5",
             "recap beta 2.5": "RECAP, guidance beta 2.5",
             "recap beta 0": "check, not an arm: the RECAP models without the indicator (beta 0, unconditional)"}


def recap_arms(r: dict) -> str:
    n = r["seeds"]
    rows = [f"| arm | success, mean of {n} seeds | 95% interval over seeds (t) | pooled Wilson "
            f"({n * r['arms']['bc']['episodes_per_seed']} episodes) | per seed | mean length |",
            "| --- | --- | --- | --- | --- | --- |"]
    best = max(r["arms"][a]["success_mean"] for a in r["arms"] if a != "recap beta 0")
    for arm, a in r["arms"].items():
        mean = f"{a['success_mean']:.3f}"
        rows.append(f"| {ARM_NAMES.get(arm, arm)} | {f'**{mean}**' if a['success_mean'] == best else mean} | "
                    f"{a['success_ci95_over_seeds'][0]:.3f}-{a['success_ci95_over_seeds'][1]:.3f} | "
                    f"{a['success_pooled_wilson95'][0]:.3f}-{a['success_pooled_wilson95'][1]:.3f} | "
                    f"{', '.join(f'{s:.2f}' for s in a['per_seed'])} | {a['mean_episode_length']:.1f} |")
    return "\n".join(rows)


def recap_value(r: dict) -> str:
    v, b = r["value"], r["value"]["bounds_on_heldout_rollouts"]
    rows = ["| value model quality | figure |", "| --- | --- |",
            f"| held-out MAE (training holdout) | {v['heldout_value_mae']:.3f} against {v['heldout_constant_mae']:.3f} "
            f"for the best constant ({v['mae_ratio']:.2f}x; target {r['targets']['mae_ratio']:g}x) |",
            f"| AUC of V(o_0) on {v['heldout_rollout_episodes']} held-out rollouts | "
            f"{v['auc_v0_heldout_rollouts']:.2f} |"]
    for key, name in (("value_model_mae", "value model"), ("constant_mae", "best constant"),
                      ("state_mlp_mae", "MLP on the full state, time, distances"),
                      ("outcome_oracle_mae", "told the outcome")):
        rows.append(f"| MAE on the held-out rollouts: {name} | {b[key]:.3f} ({b['constant_mae'] / b[key]:.2f}x) |")
    return "\n".join(rows)


def recap_findings(r: dict) -> str:
    arms, v, b = r["arms"], r["value"], r["value"]["bounds_on_heldout_rollouts"]
    best = r["best_recap_arm"]
    beta0, recap = arms["recap beta 0"]["success_mean"], arms["recap"]["success_mean"]

    def points(key: str) -> str:  # a success difference in points, against its target
        return (f"{r[key] * 100:+.1f} points (target {r['targets'][key] * 100:+.0f}: "
                f"{verdict(r[key] >= r['targets'][key])})")

    return "\n".join([
        f"- RECAP against BC on the same data: the best arm ({best}) by {points('best_recap_minus_bc')}.",
        f"- RECAP against filtered BC: {points('best_recap_minus_fbc')}.",
        f"- The conditioning is used: the RECAP models without the indicator (beta 0) score {beta0:.3f} "
        f"(BC: {arms['bc']['success_mean']:.3f}); \"Advantage: positive\" (beta 1) adds "
        f"{(recap - beta0) * 100:.0f} points.",
        f"- Value model: held-out MAE {v['heldout_value_mae']:.3f} against {v['heldout_constant_mae']:.3f} for the "
        f"best constant ({v['mae_ratio']:.2f}x lower; target {r['targets']['mae_ratio']:g}x: "
        f"{verdict(v['mae_ratio'] >= r['targets']['mae_ratio'])}); AUC of V(o_0) for success on "
        f"{v['heldout_rollout_episodes']} held-out rollouts {v['auc_v0_heldout_rollouts']:.2f}. On those rollouts: "
        f"value model {b['value_model_mae']:.3f}, constant {b['constant_mae']:.3f}, state MLP {b['state_mlp_mae']:.3f} "
        f"({b['constant_mae'] / b['state_mlp_mae']:.2f}x), told the outcome {b['outcome_oracle_mae']:.3f} "
        f"({b['constant_mae'] / b['outcome_oracle_mae']:.1f}x)."])

