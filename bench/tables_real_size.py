"""The docs block of bench_real_size.py's results (bench/results/real_size.json): the reference
models built from configs with random weights, one training step and one guided chunk or label
batch each, on the machine named; with --throughput-steps, what each model's data path costs."""


def real_size(r: dict) -> str:
    rows = ["| model | parameters (trainable in the step) | build | one training step | guided chunk (beta 1.5) "
            "or one `label` batch | peak RSS |", "| --- | --- | --- | --- | --- | --- |"]
    for m in r["models"]:
        if "error" in m:
            rows.append(f"| {m['model']} | failed: {m['error']} | | | | |")
            continue
        if "guided_chunk_s" in m:
            last = f"{m['guided_chunk_s']:.1f} s, chunk {tuple(m['chunk_shape'])}"
        else:
            last = (f"{m['label_batch_s']:.1f} s for {m['label_batch_frames']} frames of 224 px "
                    f"({m['label_frames_per_s']:.2f} frames/s, decoding included)")
        rows.append(f"| {m['model']} | {m['parameters'] / 1e9:.2f}B ({m['trainable'] / 1e9:.2f}B) | "
                    f"{m['build_s']:.0f} s | {m['train_step_s']:.1f} s (batch {m['batch']}) | {last} | "
                    f"{m['peak_rss_gb']:.1f} GB |")
    head = (f"Measured on {r['device']}, {r['dtype']}, {r['torch_threads']} torch threads (Python "
            f"{r['machine']['python']}); one step each, first use included; each model in its own process:")
    return "\n".join([head, "", *rows, *data_paths(r["models"])])


def data_paths(models: list[dict]) -> list[str]:
    """The data paths' costs, where the run measured them (bench_real_size.py --throughput-steps)."""
    rows = []
    for m in models:
        if "data_path" in m:
            d = m["data_path"]
            rows.append(f"| {m['model']} | {d['steps']} training steps fed by the trainer's loader "
                        f"({d['num_workers']} workers) / on one prepared batch | {d['loader_step_s']:.3f} s / "
                        f"{d['synthetic_step_s']:.3f} s a step | {d['ratio']:.3f} (at most {d['target']}) |")
        if "labeling" in m:
            d = m["labeling"]
            rows.append(f"| {m['model']} | `label` over {d['frames']} frames of 224 px (batch {d['batch']}) / the "
                        f"bare model on them, decoded | {d['label_frames_per_s']:.1f} / "
                        f"{d['bare_frames_per_s']:.1f} frames/s | {d['ratio']:.3f} (at most {d['target']}) |")
    if not rows:
        return []
    return ["", "What the data paths cost (the faster of two interleaved runs of each arm):", "",
            "| model | with the data path / without | time | ratio (target) |", "| --- | --- | --- | --- |", *rows]
