"""The docs blocks of what grows: bench_store.py (the store), bench_scale.py (relabel and quantiles at 100M
frames, the 1.8-billion projection) and bench_label_processes.py (the value pass per process)."""

from tables_common import machine, verdict


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


def label_processes(r: dict) -> str:
    rows = [f"| {x['frames']:,} | {x['processes']} | {x['frames_per_process']:,} | "
            f"{', '.join(f'{mb:,}' for mb in x['peak_rss_mb'])} | {x['wall_s']:.1f} s |" for x in r["runs"]]
    return "\n".join([f"Measured by `bench/bench_label_processes.py` on {machine(r)}: `label` under torchrun with the "
                      f"tiny value model, over {copies_text(r.get('copies', [1, 2, 4]))} copies of the default base "
                      "shard (each process's own peak RSS; the 1- and 2-process label sets checked equal):", "",
                      "| frames | processes | frames per process | peak RSS per process (MB) | wall |",
                      "| --- | --- | --- | --- | --- |", *rows, *label_nodes(r.get("nodes"))])


def copies_text(copies: list[int]) -> str:
    return ", ".join(map(str, copies[:-1])) + f" and {copies[-1]}" if len(copies) > 1 else str(copies[0])


def value_pass_row(runs: list[dict] | None, target: float) -> list[str]:
    """The projection's row for the value pass: its peaks, and the MB of peak RSS more per million
    frames a process between the two largest one-process runs (the first shards also warm up the
    model, decoders and DuckDB, so the slope over the last ones is what grows with the store)."""
    if not runs:
        return []
    peaks = [mb for x in runs for mb in x["peak_rss_mb"]]
    alone = sorted((x for x in runs if x["processes"] == 1), key=lambda x: x["frames_per_process"])
    if len(alone) < 2:
        return []
    lo, hi = alone[-2:]
    growth = (hi["peak_rss_mb"][0] - lo["peak_rss_mb"][0]) / (hi["frames_per_process"] - lo["frames_per_process"]) * 1e6
    return [f"| the value pass, per process | {min(peaks):,}-{max(peaks):,} MB peak from "
            f"{min(x['frames_per_process'] for x in runs):,} to {max(x['frames_per_process'] for x in runs):,} "
            f"frames a process; {growth:+,.0f} MB per million frames from {lo['frames_per_process']:,} to "
            f"{hi['frames_per_process']:,} frames on one process | no gather: one part of at most 1M frames per "
            "process (its keys, task and value: about 100 MB); "
            + (f"{growth * target / 1e6 / 1024:,.1f} GB more if one process scored all 1.8 billion frames at that "
               "slope |" if growth > 0 else "the peak does not grow with the frames a process scores |")]


def label_nodes(nodes: list[dict] | None) -> list[str]:
    if not nodes:
        return []
    return ["", "The same commands as one plain process and as two nodes of one process each on this machine "
            "(two torchrun launchers, a static rendezvous; launcher and torch start included):", "",
            "| command | one process | two nodes | ratio |", "| --- | --- | --- | --- |",
            *(f"| `{n['command']}` | {n['one_process_s']:.1f} s | {n['two_nodes_s']:.1f} s | "
              f"{n['one_process_s'] / n['two_nodes_s']:.2f}x |" for n in nodes)]


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
        *([f"| `relabel` over {src['sources']} label sets (one threshold over all) | {src['wall_s']:.0f} s for "
           f"{src['frames'] / 1e6:.0f}M frames, {src['peak_rss_mb']:,} MB | as one label set: label each day's or "
           "node's shards apart, relabel them together |"] if (src := r.get("sources")) else []),
        *value_pass_row(results.get("label_processes.json", {}).get("runs"), target),
        "", "Reading and writing parquet is most of relabel's time; the writing runs in one thread per core, so a "
        "node with more cores should take less (not measured). Past one node, the engines above split the same "
        "work by parts."])
