"""Benchmark figures in docs/ come from bench/results/*.json, never typed by hand.

Each table or list of figures sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a
docs page (or README.md) and is rendered by TABLES[NAME] from its results file, with the machine it was measured
on. After a benchmark run:

    .venv/bin/python bench/docs_tables.py          # rewrite the tables in docs/
    .venv/bin/python bench/docs_tables.py --check  # exit 1 if a table differs (make test runs this)
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

from tables_loops import loops
from tables_real_size import real_size

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
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


def verdict(met: bool) -> str:
    return "met" if met else "missed"


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


def machine(r: dict) -> str:
    m = r["machine"]
    return f"{m['cpus']} CPU cores, Python {m['python']}" + (f", {m['gpu']}" if m.get("gpu") else "")


def store_growth(r: dict) -> str:
    g = r["growth"]
    label_sets = {str(x["shards"]): x["label_sets"] for x in g["stores"]}
    rows = [f"Measured on {machine(r)}, medians of {g['repeats']} interleaved runs; the shard committed has "
            f"{g['shard_episodes']} episodes ({g['shard_frames']} frames); commands timed as a user runs them, "
            "Python's start included.", "",
            "| shards (label sets) | commit of a ready shard | `db.connect` | manifests read | `shards list` "
            "| `sql \"SELECT count(*) FROM frames\"` |", "| --- | --- | --- | --- | --- | --- |"]
    for n, t in g["median_s"].items():
        rows.append(f"| {int(n):,} ({label_sets[n]}) | {t['commit']:.3f} s | {t['connect']:.3f} s | "
                    f"{t['manifests']:.3f} s | {t['cli_shards_list']:.2f} s | {t['cli_sql_count']:.2f} s |")
    (key,) = [k for k in g if k.startswith("commit_ratio_")]
    large, small = key.removeprefix("commit_ratio_").split("_over_")
    slowest = max(g["median_s"][large][k] for k in ("connect", "cli_shards_list", "cli_sql_count"))
    rows += ["", f"Commit in a store of {int(large):,} shards against {small}: {g[key]:.2f}x (target "
             f"{g['target_commit_ratio']:g}x); connect, `shards list` and the count in the largest store against "
             f"their {g['target_s']:g} s target: {verdict(slowest <= g['target_s'])}."]
    return "\n".join(rows)


def store_query(r: dict) -> str:
    q = r["query"]
    return "\n".join([
        f"DuckDB over the `frames` view of {q['frames']:,} frames in {q['shards']} shards ({machine(r)}; shards 2-"
        f"{q['shards']} are copies of the first): `db.connect` {q['connect_seconds']:.3f} s, `count(*)` "
        f"{q['count_seconds_median']:.3f} s, a per-task GROUP BY "
        f"{q['per_task_success_and_state_mean_seconds_median']:.3f} s "
        f"({q['frames_per_second_grouped_query'] / 1e6:.1f}M frames/s), episodes per shard "
        f"{q['episodes_per_shard_seconds_median']:.3f} s. Writing the first shard (no cameras): "
        f"{q['write_frames_per_second']:,} frames/s."])


def labels_decoding(r: dict) -> str:
    d = r["decoding"]
    shards = "; ".join(f"`{x['shard']}`: {x['episodes']} episodes, {x['frames']:,} frames, {x['cameras']} cameras of "
                       f"{x['image_size']} px, jobs of up to {x['run_frames']:,} frames" for x in d["shards"])
    rows = [f"Every episode of a shard delivered in order by `iter_episode_frames`, as the labeler and the trainers "
            f"take them ({shards}); best of {d['repeats']}, settings interleaved ({machine(r)}; CPU includes the "
            "ffmpeg processes):", "",
            "| shard | decoder | workers | wall | CPU | frames/s (all cameras) | camera frames/s "
            "| camera frames per CPU second |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in d["shards"]:
        for s in x["settings"]:
            one, many = ("process", "processes") if s["decoder"] == "ffmpeg" else ("thread", "threads")
            what = one if s["workers"] == 1 else many
            rows.append(f"| {x['shard']} | {s['decoder']} | {s['workers']} {what} | {s['wall_s']:.2f} s | "
                        f"{s['cpu_s']:.2f} s | {s['frames_per_s']:,} | {s['camera_frames_per_s']:,} | "
                        f"{s['camera_frames_per_cpu_s']:,} |")
    return "\n".join(rows)


def labels_sizing(r: dict) -> str:
    d = r["decoding"]
    # CPU seconds per camera frame at each measured size: the pool's (ffmpeg's) lower rate
    rate = {x["image_size"]: min(s["camera_frames_per_cpu_s"] for s in x["settings"] if s["decoder"] == "ffmpeg")
            for x in d["shards"]}
    (small, large), k = sorted(rate), d["shards"][0]["cameras"]
    # Estimate between and beyond them: a fixed cost per frame plus one per pixel, through both points.
    per_pixel = (1 / rate[large] - 1 / rate[small]) / (large**2 - small**2)
    per_frame = max(0.0, 1 / rate[small] - per_pixel * small**2)
    sizes = sorted({small, large, 128, 448})

    def cost(p: int) -> float:
        return 1 / rate[p] if p in rate else per_frame + per_pixel * p**2

    rows = [f"Decoder cores for a value model that takes {k} cameras per frame, from the ffmpeg pool's rates per "
            "CPU second above (the lower of its 1- and 2-process runs: "
            + ", ".join(f"{rate[p]:,} camera frames at {p} px" for p in sorted(rate)) + f"; {machine(r)}). Columns "
            "marked estimate are not measured: they take a camera frame's CPU cost as a fixed part plus a part "
            f"proportional to its pixels, through the two measured sizes ({per_frame * 1e6:.0f} us per frame plus "
            f"{per_pixel * 1e9:.1f} ns per pixel).", "",
            "| value model | " + " | ".join(f"cores at {p} px" + ("" if p in rate else " (estimate)") for p in sizes)
            + " |", "| --- |" + " --- |" * len(sizes)]
    for fps in (1_000, 5_000, 20_000):
        rows.append(f"| {fps:,} frames/s | " + " | ".join(f"{math.ceil(fps * k * cost(p)):,}" for p in sizes) + " |")
    return "\n".join(rows)


SETTINGS = {"split": "split: the model on {t} torch thread(s), one core left to the decoder (not pinned)",
            "dedicated": "split: the model on {t} torch thread(s), one core left to the decoder (not pinned)",
            "shared": "shared: {t} torch threads, decoding takes CPU time from the model",
            "gpu": "the model on the GPU, {t} CPU threads"}


def labels_overhead(r: dict) -> str:
    rows = [f"Measured on {machine(r)}:", "",
            "| model | setting | frames | bare inference | `label()` end to end | ratio | target |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for o in r["overhead"]:
        rows.append(f"| {o['model']} | {SETTINGS[o['setting']].format(t=o['torch_threads'])} | {o['frames']:,} | "
                    f"{o['bare_inference_s']:.2f} s | {o['label_end_to_end_s']:.2f} s | {o['ratio']:.2f} | "
                    f"{o['target']:g} |")
    return "\n".join(rows)


def labels_math(r: dict) -> str:
    m, q = r["math"], r["query"]
    rate = m["frames_per_s"]
    return "\n".join([
        f"Label math from stored values in memory (what `relabel` runs) over {m['frames']:,} frames, one run "
        f"({machine(r)}); the three answers are identical:", "",
        "| implementation | seconds | frames/s |", "| --- | --- | --- |",
        f"| compiled kernels (`build_labels`), best of {len(m['kernels_s'])} | {min(m['kernels_s']):.3f} | "
        f"{rate['kernels_best'] / 1e6:.1f}M (target {m['target_frames_per_s'] / 1e6:.0f}M) |",
        f"| the same, first run (fresh memory: page faults) | {m['kernels_s'][0]:.3f} | "
        f"{rate['kernels_first'] / 1e6:.1f}M |",
        f"| plain numpy, the same formulas | {m['plain_numpy_s']:.2f} | {rate['plain_numpy'] / 1e6:.1f}M |",
        f"| pandas reference (`reference_labels`) | {m['reference_s']:.2f} | {rate['reference_pandas'] / 1e6:.2f}M |",
        "", f"Per-task advantage quantiles and positive fraction in DuckDB over those frames: "
        f"{q['duckdb_quantiles_s']:.2f} s.", *labels_strings(r.get("strings"))])


def labels_strings(s: dict | None) -> list[str]:
    if not s:
        return []
    kinds = {"categorical": "categorical (as label tables are read)",
             "strings_shared": "Python strings, one object per value (pyarrow's to_pandas)",
             "strings_per_row": "Python strings, one object per row (DuckDB's .df())"}
    return ["", f"The same math from a plain pandas frame of {s['frames']:,} frames, by the dtype of its shard and "
            f"task columns (best of 3, the same labels from each; target {s['target_frames_per_s'] / 1e6:.0f}M "
            "frames/s):", "", "| shard and task | seconds | frames/s |", "| --- | --- | --- |",
            *(f"| {kinds[k]} | {s[k]['seconds']:.3f} | {s[k]['frames_per_s'] / 1e6:.1f}M |" for k in kinds)]


def label_processes(r: dict) -> str:
    rows = [f"| {x['frames']:,} | {x['processes']} | {x['frames_per_process']:,} | "
            f"{', '.join(f'{mb:,}' for mb in x['peak_rss_mb'])} | {x['wall_s']:.1f} s |" for x in r["runs"]]
    return "\n".join([f"Measured by `bench/bench_label_processes.py` on {machine(r)}: `label` under torchrun with the "
                      "tiny value model, over 1, 2 and 4 copies of the default base shard (each process's own peak "
                      "RSS; the 1- and 2-process label sets checked equal):", "",
                      "| frames | processes | frames per process | peak RSS per process (MB) | wall |",
                      "| --- | --- | --- | --- | --- |", *rows])


def labels_report(r: dict) -> str:
    names = [s["setting"] for s in r["label_sets"][0]["settings"]]
    title = {"tables": "tables and plots", "html": "and report.html, no videos"}
    rows = [f"`recap-data report` on label sets the size of the default pipeline's (params.yaml's base shard and "
            "100 episodes per iteration from the same generator standing in for its rollouts), in-process, best of "
            f"{r['repeats']}, settings interleaved ({machine(r)}); for the page: its size and its videos:", "",
            "| label set | episodes | frames | " + " | ".join(
                title[n] if n in title else f"and report.html, `--videos {n.split()[1]}`" for n in names)
            + " | the pipeline's `report --html-dir --videos 1`, end to end (a fresh process) |",
            "| --- |" + " --- |" * (len(names) + 3)]
    for x in r["label_sets"]:
        cells = []
        for s in x["settings"]:
            page = (f" ({s['html_bytes'] / 1e3:,.0f} kB" + (f", {s['videos']} videos of {s['video_frames']:,} frames"
                                                           if s["videos"] else "") + ")") if s["html"] else ""
            cells.append(f"{s['best_s']:.2f} s{page}")
        rows.append(f"| {x['name']} ({', '.join(x['shards'])}) | {x['episodes']} | {x['frames']:,} | "
                    + " | ".join(cells) + f" | {x['cli_pipeline_s']:.1f} s |")
    return "\n".join(rows)


def scale_relabel(r: dict) -> str:
    rel, q = r["relabel"], r["quantiles"]
    runs = ", ".join(f"{t:.2f}" for t in q["connect_and_query_s"])
    return "\n".join([
        f"Measured by `bench/bench_scale.py` on {machine(r)}: a synthetic label set of {rel['frames']:,} frames in "
        f"{rel['shards']} shards ({rel['parts']} parts, {rel['table_bytes'] / 1e9:.2f} GB of parquet).", "",
        "| what | measured | target |", "| --- | --- | --- |",
        f"| `recap-data relabel` of {rel['frames'] / 1e6:.0f}M frames, as a command | {rel['wall_s']:.1f} s "
        f"({rel['frames'] / rel['wall_s'] / 1e6:.1f}M frames/s) | {rel['target_wall_s']} s: "
        f"{verdict(rel['wall_s'] <= rel['target_wall_s'])} |",
        f"| its peak memory (RSS) | {rel['peak_rss_mb']:,} MB | {rel['target_peak_mb']:,} MB: "
        f"{verdict(rel['peak_rss_mb'] <= rel['target_peak_mb'])} |",
        f"| the same with `--memory-limit-mb 1`: refused after the scan, nothing written | "
        f"{rel['refused_at_1_mb']['wall_s']:.1f} s | - |",
        *([f"| the same relabel over {src['sources']} label sets of {src['frames'] / src['sources'] / 1e6:.0f}M frames "
           f"(one threshold over all; {'the same tables and epsilons' if src['same_as_one'] else 'A DIFFERENT ANSWER'})"
           f" | {src['wall_s']:.1f} s, {src['peak_rss_mb']:,} MB | - |"] if (src := r.get("sources")) else []),
        f"| per-task advantage quantiles in DuckDB (`connect` + one query), best of {len(q['connect_and_query_s'])} "
        f"({runs} s) | {q['best_s']:.2f} s | {q['target_s']:g} s: {verdict(q['best_s'] <= q['target_s'])} |",
        f"| the same scan and grouping with `avg` instead of the quantiles | {q['scan_only_best_s']:.2f} s | - |",
        f"| the quantiles sampled (`reservoir_quantile`), off by up to {q['reservoir_max_error_iqr']:.3f} "
        f"interquartile ranges | {q['reservoir_best_s']:.2f} s | - |",
        "", f"Relabel's own estimate of its peak (what `--memory-limit-mb` is checked against) was "
        f"{rel['refused_at_1_mb']['estimate_mb']:,} MB, from parts of up to about 1M rows and "
        f"{rel['refused_at_1_mb']['candidates']:,} threshold candidates: "
        f"{'above' if rel['refused_at_1_mb']['estimate_mb'] >= rel['peak_rss_mb'] else 'BELOW'} the measured peak."])


def scale_projection(results: dict) -> str:
    """1.8 billion frames, projected linearly from the measured rates (one node, this machine)."""
    r = results["scale.json"]
    rel, q, target = r["relabel"], r["quantiles"], 1.8e9
    factor = target / rel["frames"]
    kernels = results["labels.json"]["math"]["frames_per_s"]["kernels_best"]
    return "\n".join([
        f"Projected to 1.8 billion frames (10,000 hours at 50 Hz) from the figures above, linearly, on the same "
        f"{machine(r)} (a projection, not a measurement):", "",
        "| step | measured | at 1.8 billion frames, one such node |", "| --- | --- | --- |",
        f"| label math in memory (compiled kernels) | {kernels / 1e6:.1f}M frames/s | {target / kernels:.0f} s of "
        f"compute, but {target * 150 / 1e9:.0f} GB of rows in memory: out of core instead |",
        f"| out-of-core `relabel` | {rel['wall_s']:.0f} s for {rel['frames'] / 1e6:.0f}M frames, "
        f"{rel['peak_rss_mb']:,} MB | about {rel['wall_s'] * factor / 60:.0f} min; the same memory but for the "
        f"threshold candidates ({rel['refused_at_1_mb']['candidates'] * factor / 1e6:.0f}M, about "
        f"{rel['refused_at_1_mb']['candidates'] * factor * 48 / 2**20:,.0f} MB while sorted); a "
        f"{target * 12 / 1e9:.0f} GB scratch file |",
        f"| per-task quantiles in DuckDB | {q['best_s']:.1f} s for {q['frames'] / 1e6:.0f}M frames | about "
        f"{q['best_s'] * factor / 60:.1f} min |",
        f"| label tables on disk | {rel['table_bytes'] / rel['frames']:.1f} bytes a frame | "
        f"{rel['table_bytes'] * factor / 1e9:.0f} GB |",
        "", "Reading and writing parquet is most of relabel's time; the writing runs in one thread per core, so a "
        "node with more cores should take less (not measured). Past one node, the engines above split the same "
        "work by parts."])


def policy_data(r: dict) -> str:
    s, j = r["steps_per_s"], r["label_join"]
    plain = s["plain_lerobot"]
    return "\n".join([
        f"{r['frames']:,} frames, batch {r['batch_size']}, best of interleaved runs of {r['steps']} steps "
        f"({machine(r)}):",
        "",
        f"- The label join (`load_policy_data` with the label set against without it): {j['join_s'] * 1e3:.1f} ms, "
        f"{j['join_us_per_frame']:.1f} us per frame, {j['share_of_timed_training_run']:.2%} of the "
        f"{r['steps']}-step in-memory training run below.",
        "",
        "| data path | training steps/s | against plain LeRobotDataset |", "| --- | --- | --- |",
        f"| plain LeRobotDataset (delta_timestamps chunks, the task as-is) | {plain:.2f} | 1.00x |",
        f"| labeled shards, LeRobot decoding (weighted sampler, indicator prompts) | "
        f"{s['labeled_lerobot_decode']:.2f} | {s['labeled_lerobot_decode'] / plain:.2f}x |",
        f"| labeled shards, frames decoded once into memory (the default) | {s['labeled_in_memory']:.2f} | "
        f"{s['labeled_in_memory'] / plain:.2f}x |"])


def rollout(r: dict) -> str:
    rec, w = r["recording"], r["workers"]
    return "\n".join([
        f"- Recording overhead ({machine(r)}, {rec['steps']} steps): {rec['bare_steps_per_s']:.2f} env steps/s bare "
        f"against {rec['recorded_steps_per_s']:.2f} recording (ratio {rec['ratio']:.3f}, target 1.10); the commit, "
        f"once per shard, {rec['commit_s']:.2f} s.",
        f"- `rollout()` of {w['workers_1']['frames']} frames, creation and resets included: "
        f"{w['workers_1']['env_steps_per_s']:.2f} env steps/s with one worker, {w['workers_2']['env_steps_per_s']:.2f} "
        f"with two ({w['speedup_2_workers']:.2f}x)."])


def world(r: dict) -> str:
    return (f"{r['steps']:,} steps at {r['image_size']} px on {r['cores_used']} core ({machine(r)}): the gymnasium env "
            f"{r['gymnasium_env_steps_per_s']:,} env steps/s, the batched world {r['world_batch_env_steps_per_s']:,} "
            f"(target {r['target_env_steps_per_s']:,}); rendering both cameras {r['render_both_cameras_us']:.1f} us "
            "per step.")


def value_throughput(r: dict) -> str:
    ret, t = r["returns"], r["training"]
    names = {"preloaded_batch": "one pre-loaded batch, reused (the model alone)",
             "in_memory_frames_w0": "frames in memory, no DataLoader worker (the default)",
             "lerobot_decoding_w0": "LeRobot's per-frame decoding, no worker",
             "in_memory_frames_w1": "frames in memory, one worker",
             "lerobot_decoding_w1": "LeRobot decoding, one worker"}
    rows = [f"- Returns for {ret['frames']:,} frames ({ret['episodes']:,} episodes): {ret['seconds']:.2f} s "
            f"({ret['frames_per_s'] / 1e6:.2f}M frames/s; {machine(r)}).",
            f"- Training throughput, batch {t['batch_size']}, {t['steps']} steps, {t['image_size']} px, in one run:",
            "",
            "  | data path | samples/s | against the pre-loaded batch |", "  | --- | --- | --- |"]
    for key, rate in t["samples_per_s"].items():
        rows.append(f"  | {names.get(key, key)} | {rate:.0f} | {t['ratio_to_preloaded_batch'][key]:.2f} |")
    return "\n".join(rows)


def pipeline(r: dict) -> str:
    rows = [f"`{r['command']}` at {r['commit'][:7]} on {machine(r)}: {r['wall_s'] / 60:.1f} min, the largest process "
            f"{r['peak_process_rss_mb'] / 1024:.1f} GB of memory.", "",
            "| policy | held-out success | 95% Wilson interval | throughput per 1,000 steps (95% CI) | steps of a "
            "success | episodes | rollouts it learnt from | value MAE (constant) | labels positive |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def pct(x):
        return "" if x is None else f"{x:.0%}"

    def rollouts(p):  # recorded in this iteration by the previous policy, on training initial states
        if p["rollout_success_rate"] is None:
            return ""
        return f"{p['rollout_policy']}'s, {pct(p['rollout_success_rate'])} success"

    for p in r["policies"]:
        mae = "" if p["value_mae"] is None else f"{p['value_mae']:.3f} ({p['constant_mae']:.3f})"
        steps = "" if p["success_steps"] is None else f"{p['success_steps']:.1f}"
        rows.append(f"| {p['name']} | {p['success_rate']:.2f} | {p['ci_low']:.2f}-{p['ci_high']:.2f} | "
                    f"{p['throughput']:.2f} ({p['throughput_low']:.2f}-{p['throughput_high']:.2f}) | {steps} | "
                    f"{p['eval_episodes']:.0f} | {rollouts(p)} | {mae} | {pct(p['positive_fraction'])} |")
    return "\n".join(rows)


def status(results: dict) -> str:
    """The README's two headline bullets, from the pipeline run and the controlled benchmark."""
    pipe, r = results["pipeline.json"], results["recap.json"]
    first, *iters = pipe["policies"]
    arms, best = r["arms"], r["best_recap_arm"]
    return "\n".join([
        f"- `make repro` ({pipe['wall_s'] / 60:.0f} min, {machine(pipe)}; teleop demonstrations, all successful), "
        "held-out success and throughput (successes per 1,000 steps) with 95% intervals: "
        + ", then ".join(f"{p['name'] if p is not first else p['name'].upper()} {p['success_rate']:.2f} "
                         f"[{p['ci_low']:.2f}, {p['ci_high']:.2f}] and {p['throughput']:.1f} "
                         f"[{p['throughput_low']:.1f}, {p['throughput_high']:.1f}]" for p in (first, *iters))
        + " after each RECAP iteration; one seed ([docs/pipeline.md](docs/pipeline.md)).",
        f"- The single-shot benchmark on the mixed regime (70% of demonstrations succeed), {r['seeds']} seeds on "
        f"held-out initial states: {ARM_NAMES[best]}: "
        f"{arms[best]['success_mean']:.2f} against {arms['bc']['success_mean']:.2f} for behaviour cloning on the same "
        f"data and {arms['fbc']['success_mean']:.2f} for filtered BC; its value model's held-out MAE is "
        f"{r['value']['mae_ratio']:.2f}x lower than a constant's, for reasons measured there "
        "([docs/results.md](docs/results.md))."])


def view(r: dict) -> str:
    s, f, p, v = r["shard"], r["frames_per_s"], r["parts"], r["video"]
    frames = s["frames"]
    workers = f"{r['decoder_workers']} decoder process" + ("es" if r["decoder_workers"] > 1 else "")
    return "\n".join([
        f"Measured by `bench/bench_view.py` on {machine(r)}: every episode of a demo shard ({s['episodes']} episodes, "
        f"{frames:,} frames, {s['cameras']} cameras of {s['image_size']} px), best of {r['repeats']}, the two "
        "interleaved:", "",
        "| what | seconds | frames/s |", "| --- | --- | --- |",
        f"| decoding alone: `iter_episode_frames`, {workers}, frames dropped | {min(r['decoding_s']):.2f} | "
        f"{f['decoding']:,} |",
        f"| `view` end to end: decoding, figures, compositing, encoding ({v['codec']}, {v['width']}x{v['height']}), "
        f"contact sheets | {min(r['view_s']):.2f} | {f['view']:,.0f} ({f['decoding'] / f['view']:.0f}x slower) |",
        "", f"Each part of `view` alone over the same frames (decoded beforehand): the figures, one per episode for "
        f"its video and its contact sheet, {p['figures_s']:.2f} s ({p['figures_s'] / s['episodes'] * 1000:.0f} ms "
        f"an episode); compositing every frame {p['compose_s']:.2f} s ({frames / p['compose_s']:,.0f} frames/s); "
        f"encoding {p['encode_s']:.2f} s ({frames / p['encode_s']:,.0f} frames/s)."])

TABLES = {"loops": ("loops.json", loops), "real-size": ("real_size.json", real_size),
          "recap-arms": ("recap.json", recap_arms), "recap-value": ("recap.json", recap_value),
          "recap-findings": ("recap.json", recap_findings),
          "store-growth": ("store.json", store_growth), "store-query": ("store.json", store_query),
          "labels-decoding": ("labels.json", labels_decoding), "labels-sizing": ("labels.json", labels_sizing),
          "labels-overhead": ("labels.json", labels_overhead),
          "labels-math": ("labels.json", labels_math), "policy-data": ("policy.json", policy_data),
          "labels-report": ("report.json", labels_report),
          "rollout": ("rollout.json", rollout), "world": ("world.json", world),
          "value-throughput": ("value.json", value_throughput), "pipeline": ("pipeline.json", pipeline),
          "scale-relabel": ("scale.json", scale_relabel),
          "scale-processes": ("label_processes.json", label_processes),
          "view": ("view.json", view),
          "scale-projection": (("scale.json", "labels.json"), scale_projection),
          "status": (("pipeline.json", "recap.json"), status)}
# A block: the opening marker at the start of a line (maybe indented, inside a list item), anything,
# and its closing marker; the rendered figures get the opening marker's indentation.
MARKED = re.compile(r"^(?P<indent>[ \t]*)<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)"
                    r"^[ \t]*<!-- /bench:(?P=name) -->", re.S | re.M)
OPENING = re.compile(r"^[ \t]*<!-- bench:([\w-]+) -->", re.M)  # (a marker quoted inside a line is text)


def render(text: str, where: str = "page") -> str:
    """The page with every block's figures rendered from its results; an unknown block, an
    opening marker without its closing one, or a block that renders empty is an error."""
    opened = OPENING.findall(text)
    blocks = [m["name"] for m in MARKED.finditer(text)]
    if opened != blocks:
        raise SystemExit(f"{where}: bench markers {sorted(set(opened) - set(blocks)) or opened} are not closed "
                         "by `<!-- /bench:NAME -->` at the start of a line")
    unknown = sorted(set(blocks) - set(TABLES))
    if unknown:
        raise SystemExit(f"{where}: unknown bench block {unknown[0]!r}; known: {', '.join(TABLES)}")

    def load(file: str) -> dict:
        if not (RESULTS / file).is_file():
            raise SystemExit(f"{where}: bench block needs bench/results/{file}; run its benchmark "
                             f"(bench/bench_{file.removesuffix('.json')}.py)")
        return json.loads((RESULTS / file).read_text())

    def table(m):
        files, fn = TABLES[m["name"]]
        # figures from one results file, or from several (a dict of them)
        body = fn({f: load(f) for f in files}) if isinstance(files, tuple) else fn(load(files))
        if not body.strip():
            raise SystemExit(f"{where}: bench block {m['name']!r} renders empty")
        indent = m["indent"]
        lines = "\n".join(indent + line if line else "" for line in body.splitlines())
        return f"{indent}<!-- bench:{m['name']} -->\n{lines}\n{indent}<!-- /bench:{m['name']} -->"

    return MARKED.sub(table, text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 if a docs table differs from its results")
    args = parser.parse_args()
    stale, used = [], set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        used |= set(OPENING.findall(text))
        new = render(text, str(page.relative_to(ROOT)))
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    unused = sorted(set(TABLES) - used)
    if unused:
        print(f"bench blocks {', '.join(unused)} appear in no page; place them or remove them from TABLES",
              file=sys.stderr)
        return 1
    if args.check and stale:
        print(f"stale benchmark tables in {', '.join(map(str, stale))}: run python bench/docs_tables.py",
              file=sys.stderr)
        return 1
    print("rewrote " + ", ".join(map(str, stale)) if stale and not args.check else "docs tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
