"""The real-size path built and stepped (not a test): pi0 and pi0.5 at their reference variants
(PaliGemma gemma_2b with the gemma_300m action expert, SigLIP so400m, 224-px images, the real
vocabulary) and the reference value model (SigLIP so400m with Gemma 3 270M), from configs with
random weights: nothing is downloaded, and the project's tokenizer stands in for PaliGemma's and
Gemma's (its ids lie inside their vocabularies). Writes bench/results/real_size.json.

Each model runs in its own process (so that its peak resident memory is its own) and reports:
parameters (all, and trainable under the step's settings), the time to build it (torch's random
initialization, most of it), and
  policies     one training step (preprocessor with the indicator prompt, forward, backward,
               AdamW step) with LeRobot's own train_expert_only and freeze_vision_encoder, so
               that the step fits a 24 GB machine, then one guided action chunk at beta 1.5
               (positive and unconditional prompts as one batch of 2B, 10 Euler steps);
  value model  one training step of the whole model (cross-entropy over the bins, AdamW), then
               the checkpoint written and one labeling batch: `recap-data label`'s own pass over
               a 224-px shard of the embedded world (video decoding, the model, the label set).
Times are one step each (first use included) on this machine; the device is named in the results.

    .venv/bin/python bench/bench_real_size.py [--device cpu] [--batch 1] [--dtype float32]
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import machine_info, write_results

RESULTS = Path(__file__).parent / "results" / "real_size.json"
CAMERAS = ("observation.images.image", "observation.images.image2")
TASK = "put both moka pots on the stove"
FEATURES = {**{c: {"dtype": "video", "shape": [224, 224, 3]} for c in CAMERAS},
            "observation.state": {"dtype": "float32", "shape": [8]}, "action": {"dtype": "float32", "shape": [7]}}
GUIDANCE = 1.5


def peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # ru_maxrss is in KiB on Linux


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"


def policy_run(family: str, args) -> dict:
    import torch

    from recap_data.policy.conditioning import prompt
    from recap_data.policy.lerobot_compat import sample_chunk
    from recap_data.policy.model import build_tokenizer, processors, reference_policy
    from recap_data.policy.train import PolicyTrainConfig

    torch.manual_seed(0)
    cfg = PolicyTrainConfig(type=family, chunk_size=50, n_action_steps=50, tokenizer_max_length=64,
                            train_expert_only=True, freeze_vision_encoder=True)
    started = time.perf_counter()
    policy = reference_policy(cfg, FEATURES, dtype=args.dtype).to(args.device)
    built = time.perf_counter() - started
    tokenizer = build_tokenizer(cfg, [TASK], 8)
    stats = {k: {"mean": torch.zeros(n), "std": torch.ones(n), "min": -torch.ones(n), "max": torch.ones(n),
                 "q01": -torch.ones(n), "q99": torch.ones(n)} for k, n in (("observation.state", 8), ("action", 7))}
    policy.config.device = args.device
    pre, _ = processors(policy.config, stats, tokenizer)
    b = args.batch
    frames = {c: torch.rand(b, 3, 224, 224) for c in CAMERAS}
    state = torch.randn(b, 8)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2.5e-5)
    policy.train()
    started = time.perf_counter()
    batch = pre({**frames, "observation.state": state, "action": torch.randn(b, 50, 7),
                 "task": [prompt(TASK, i % 2 == 0) for i in range(b)]})
    loss, _ = policy(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step_s = time.perf_counter() - started
    policy.eval()
    started = time.perf_counter()
    pos = pre({**frames, "observation.state": state, "task": [prompt(TASK, True)] * b})
    unc = pre({**frames, "observation.state": state, "task": [TASK] * b})
    chunk = sample_chunk(policy, pos, unc, None, GUIDANCE)  # (B, 50, max_action_dim)
    chunk_s = time.perf_counter() - started
    return {"model": f"{family} (gemma_2b + gemma_300m expert)",
            "parameters": sum(p.numel() for p in policy.parameters()), "trainable": sum(p.numel() for p in trainable),
            "build_s": round(built, 1),
            "train_step_s": round(step_s, 1), "loss_finite": bool(torch.isfinite(loss)),
            "guided_chunk_s": round(chunk_s, 1), "chunk_shape": list(chunk.shape),
            "chunk_finite": bool(torch.isfinite(chunk).all()), "batch": b, "peak_rss_gb": peak_gb()}


def value_run(args) -> dict:
    import torch
    import torch.nn.functional as F

    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.data.frames import load_frames
    from recap_data.label_math.config import RewardConfig
    from recap_data.label_math.tables import compute_returns
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.store.store import ShardStore
    from recap_data.train.tokenizer import tiny_tokenizer
    from recap_data.value.model import ValueModelConfig, reference_model, save_value_checkpoint

    torch.manual_seed(0)
    started = time.perf_counter()
    model = reference_model(ValueModelConfig(size="real", camera_keys=list(CAMERAS), state_mlp=True))
    model.to(device=args.device, dtype=getattr(torch, args.dtype))
    built = time.perf_counter() - started
    b = args.batch * 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 512, (b, 16), device=args.device)
    started = time.perf_counter()
    images = torch.rand(b, 2, 3, 224, 224, device=args.device)
    logits = model(images, torch.randn(b, 8, device=args.device), ids, torch.ones_like(ids))  # (B, bins)
    loss = F.cross_entropy(logits, torch.randint(0, 201, (b,), device=args.device))
    loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - started
    del optimizer
    model.float().cpu().eval()  # the checkpoint is written as training writes it; `label` puts it on its device
    with tempfile.TemporaryDirectory() as tmp:
        store = ShardStore(Path(tmp) / "data")
        make_demo_data(store, DemoDataConfig(episodes=2, tasks=1, first_task=8, max_steps=20, image_size=224),
                       progress=False)
        reward = RewardConfig()
        frames, normalizers = compute_returns(load_frames(store, ["base"]), reward)
        ckpt = Path(tmp) / "value"
        ckpt.mkdir()
        tokenizer = tiny_tokenizer([TASK], 512, model.cfg.max_text_tokens)
        save_value_checkpoint(ckpt, model, tokenizer, reward, normalizers,
                              {"format": "bench", "note": "random weights at the reference widths"})
        started = time.perf_counter()
        label(store, ["base"], ckpt, "bench", reward, LabelConfig(batch_size=len(frames)), progress=False)
        label_s = time.perf_counter() - started
    return {"model": "value (SigLIP so400m + Gemma 3 270M)", "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters()), "build_s": round(built, 1), "batch": b,
            "train_step_s": round(step_s, 1), "loss_finite": bool(torch.isfinite(loss)),
            "label_batch_frames": len(frames), "label_batch_s": round(label_s, 1),
            "label_frames_per_s": round(len(frames) / label_s, 2), "peak_rss_gb": peak_gb()}


def child(name: str, args, queue) -> None:
    try:
        queue.put(value_run(args) if name == "value" else policy_run(name, args))
    except Exception as e:  # reported in the results, not lost with the process
        queue.put({"model": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pi0,pi05,value")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="policy batch per step (the value model takes 4x)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    rows = []
    ctx = mp.get_context("spawn")
    for name in args.models.split(","):
        queue = ctx.Queue()
        process = ctx.Process(target=child, args=(name, args, queue))
        process.start()
        row = None
        while row is None and (process.is_alive() or not queue.empty()):
            try:
                row = queue.get(timeout=5)
            except Exception:  # queue.Empty: still running
                pass
        process.join()
        row = row or {"model": name, "error": f"the process died (exit code {process.exitcode}; -9: out of memory)"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    import torch

    write_results(args.results, {"device": device_name(args.device), "dtype": args.dtype, "machine": machine_info(),
                                 "torch_threads": torch.get_num_threads(), "models": rows})


if __name__ == "__main__":
    main()
