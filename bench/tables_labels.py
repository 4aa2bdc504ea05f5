"""The docs blocks of the labeler's benchmarks: bench_labels.py (decoding, overhead, label math), bench_report.py
and bench_view.py."""

import math

from tables_common import machine


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
