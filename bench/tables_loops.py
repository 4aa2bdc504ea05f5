"""The docs block of bench_loops.py's results (bench/results/loops.json): per data regime, the
arms loop against loop, the comparisons against their targets, and the value model's error; and
the README's status lines (with the main job's run, bench/results/pipeline.json)."""

from tables_common import interval, machine

ARM_NAMES = {"sft": "SFT (BC on the demonstrations; both loops start here)",
             "recap it1": "RECAP, iteration 1", "recap it2": "RECAP, iteration 2",
             "recap it2 beta*": "RECAP, iteration 2, guidance beta chosen on validation",
             "recap it2 beta 0 (check)": "check, not an arm: RECAP iteration 2 without its indicator (beta 0)",
             "fbc loop it1": "iterated filtered BC, iteration 1", "fbc loop it2": "iterated filtered BC, iteration 2",
             "single-shot bc": "single shot from scratch: BC",
             "single-shot fbc": "single shot from scratch: filtered BC",
             "single-shot recap": "single shot from scratch: RECAP (beta 1)"}
BOUNDS = (("value_model_mae", "value model: its mean (what labels use)"),
          ("value_model_median_mae", "value model: its median"),
          ("state_mlp_mae", "MLP on state, time and distances: a median predictor (L1)"),
          ("state_mlp_mean_mae", "the same MLP as a mean predictor (squared loss)"),
          ("constant_mae", "best constant (the training median)"),
          ("outcome_oracle_mae", "the training median for the same outcome and time (5-frame bins)"))


def _arm_rows(e: dict) -> list[str]:
    n = e["seeds"]
    rows = [f"| arm | success, pooled ({n} x {e['episodes']} episodes) [Wilson 95%] | mean over seeds [t 95%] "
            "| per seed | throughput per 1,000 steps [95%] | steps of a success |",
            "| --- | --- | --- | --- | --- | --- |"]
    for arm, a in e["arms"].items():
        mean, low, high = a["success_mean_ci95_over_seeds"]
        steps, per_seed = a["success_steps_pooled"], ", ".join(f"{s:.2f}" for s in a["per_seed"]["success"])
        tput, (tlow, thigh) = a["throughput_pooled"], a["throughput_pooled_ci95"]
        pooled = f"{a['success_pooled']:.3f} {interval(a['success_pooled_wilson95'])}"
        rows.append(f"| {ARM_NAMES.get(arm, arm)} | {pooled} "
                    f"| {mean:.3f} {interval((low, high))} | {per_seed} | {tput:.2f} [{tlow:.2f}, {thigh:.2f}] "
                    f"| {'-' if steps is None else f'{steps:.1f}'} |")
    return rows


def _comparison(name: str, c: dict, points: float, ratio: float) -> str:
    success_met = c["success_points"] >= points and c["success_intervals_apart"] and c["success_same_sign_every_seed"]
    tput_met = (c["throughput_ratio"] or 0) >= ratio and c["throughput_intervals_apart"] \
        and c["throughput_same_sign_every_seed"]
    return (f"- RECAP (iteration 2, beta chosen on validation) {name}: {c['success_points']:+.1f} points of success "
            f"(target +{points:g}; intervals apart: {'yes' if c['success_intervals_apart'] else 'no'}; the same "
            f"sign in every seed: {'yes' if c['success_same_sign_every_seed'] else 'no'}), throughput "
            f"{c['throughput_ratio']}x (target {ratio:g}x; intervals apart: "
            f"{'yes' if c['throughput_intervals_apart'] else 'no'}; every seed: "
            f"{'yes' if c['throughput_same_sign_every_seed'] else 'no'}): "
            f"target {'met' if success_met or tput_met else 'missed'}.")


def loops(r: dict) -> str:
    t = r["targets"]
    out = []
    for name, e in r["regimes"].items():
        shares = ", ".join(f"{k} {v:g}" for k, v in e["shares"].items() if v)
        tried = ", ".join(f"{b}: {s:.3f}" for b, s in e["guidance_on_validation"].items())
        out += [f"**{name}** (demonstrators: {shares}; {e['seeds']} training seeds, {e['rollouts']} rollouts per "
                f"iteration, {e['episodes']} test episodes per policy and seed; commit {e['commit']}, "
                f"{e['machine']['cpus']} CPU cores). Guidance beta chosen on the validation split: "
                f"{e['guidance_chosen']:g} (mean success there: {tried})."
                + (f" The single-shot arms ran in a later sitting (`--only-single-shot`, commit "
                   f"{e['single_shot']['commit']}), rebuilding SFT, its rollouts and the first label set as the "
                   "loops do." if "single_shot" in e else ""), "", *_arm_rows(e), ""]
        c = e["comparisons"]
        fbc = next(k for k in c if k != "vs sft")
        out += [_comparison(f"against {fbc.removeprefix('vs ')}", c[fbc], t["recap_minus_fbc_loop_points"],
                            t["recap_over_fbc_loop_throughput"]),
                _comparison("against SFT", c["vs sft"], t["recap_minus_sft_points"], t["recap_over_sft_throughput"])]
        v = e["value"]
        held = v["heldout_rollouts_mae_mean"]
        auc = "n/a (one outcome only)" if v["auc_v0_heldout_sft_rollouts"] is None \
            else f"{v['auc_v0_heldout_sft_rollouts']:.2f}"
        out += [f"- Value model (each seed's first fine-tune), on held-out training episodes: MAE "
                f"{v['heldout_mae_mean']:.3f} (its median {v['heldout_median_mae_mean']:.3f}) against "
                f"{v['heldout_constant_mae_mean']:.3f} for the best constant. On {v['heldout_episodes']} held-out SFT "
                f"rollouts, AUC of V(o_0) for success {auc}, and MAE (x: the constant's over it):", "",
                "  | predictor | MAE on held-out rollouts |", "  | --- | --- |",
                *[f"  | {label} | {held[key]:.4f} ({held['constant_mae'] / held[key]:.2f}x) |"
                  for key, label in BOUNDS if key in held], ""]
    return "\n".join(out).rstrip()



REGIME_NAMES = {"teleop": "every demonstration succeeds", "mixed": "70% succeed", "scarce": "30% succeed"}


def status(results: dict) -> str:
    """The README's two headline bullets: the main job's run and the loops, regime by regime."""
    pipe, regimes = results["pipeline.json"], results["loops.json"]["regimes"]
    first, *iters = pipe["policies"]

    def arm(e: dict, key: str) -> str:
        a = e["arms"][key]
        return f"{a['success_pooled']:.2f} / {a['throughput_pooled']:.1f}"

    def beats(e: dict, other: str) -> str:
        c = e["comparisons"][f"vs {other}"]
        won = [what for what, key in (("success", "success"), ("throughput", "throughput"))
               if c[f"{key}_intervals_apart"] and c[f"{key}_same_sign_every_seed"]]
        return " and ".join(won) or "-"

    rows = ["| regime | SFT | RECAP loop | iterated filtered BC | RECAP beats SFT in | RECAP beats filtered BC in |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, e in regimes.items():
        if e.get("policy_type", "pi0") != "pi0":
            continue
        fbc = next(k for k in e["comparisons"] if k != "vs sft").removeprefix("vs ")
        rows.append(f"| {name} ({REGIME_NAMES.get(name, name)}) | {arm(e, 'sft')} | {arm(e, 'recap it2 beta*')} "
                    f"| {arm(e, fbc)} | {beats(e, 'sft')} | {beats(e, fbc)} |")
    seeds = next(iter(regimes.values()))["seeds"]
    return "\n".join([
        f"- `make repro` ({pipe['wall_s'] / 60:.0f} min, {machine(pipe)}; teleop demonstrations, all successful), "
        "held-out success and throughput (successes per 1,000 steps) with 95% intervals: "
        + ", then ".join(f"{p['name'] if p is not first else p['name'].upper()} {p['success_rate']:.2f} "
                         f"[{p['ci_low']:.2f}, {p['ci_high']:.2f}] and {p['throughput']:.1f} "
                         f"[{p['throughput_low']:.1f}, {p['throughput_high']:.1f}]" for p in (first, *iters))
        + " after each RECAP iteration; one seed ([docs/pipeline.md](docs/pipeline.md)).",
        f"- Loop against loop ([docs/results.md](docs/results.md)): 2 iterations of 100 rollouts from SFT, "
        f"{seeds} training seeds, test-split success / throughput (successes per 1,000 steps) pooled over "
        "seeds; RECAP's guidance beta chosen on the validation split; beating means 95% intervals apart "
        "and the same sign in every seed:", "", *rows])

