"""The docs blocks of training, simulation and the pipeline: bench_policy.py, bench_value.py, bench_rollout.py,
bench_world.py and bench_pipeline.py."""

from tables_common import machine


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
