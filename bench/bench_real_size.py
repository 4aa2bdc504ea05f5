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

With --throughput-steps K (for a GPU: issue 26's part 3), each model also reports what its data
path costs, over a 224-px shard of the embedded world (--episodes, recorded first):
  policies     K training steps fed by the trainer's own loader (policy.train.policy_loader:
               cameras decoded into memory, action chunks, the episode sampler; then the
               indicator prompts and the preprocessor) against K steps on one batch already
               prepared on the device (synthetic: no loading at all); target: at most 1.05
  value model  `recap-data label`'s pass over the shard (video decoding, batching, the model,
               the label math and the label set written) against the bare model over the same
               frames already decoded and tokenized on the device (common.bare_inference_s);
               frames/s of both; target: at most 1.15
Both arms run twice, interleaved, and the faster of each counts. --layers N cuts every tower to N
layers (the widths stay real): a quick run of this script's code paths on a CPU, whose figures
are not the real size's, so it writes nothing unless --results is given.

    .venv/bin/python bench/bench_real_size.py [--device cpu] [--batch 1] [--dtype float32]
        [--throughput-steps K --episodes 8 --num-workers 0] [--layers N]
    on a GPU, at params-real.yaml's batch sizes (policy 32, value 64 with label batches of 256):
    .venv/bin/python bench/bench_real_size.py --device cuda --dtype bfloat16 --batch 32 --value-batch 64 \
        --label-batch 256 --throughput-steps 20 --episodes 8 --num-workers 8
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


def sync(device: str) -> None:
    """Wait for the device's queued work, so that a time covers it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def embedded_store(root: Path, episodes: int, max_steps: int):
    """A store with a base shard of the embedded world's moka-pot task at 224 px (the cameras the
    reference models take)."""
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data
    from recap_data.store.store import ShardStore

    store = ShardStore(root)
    make_demo_data(store, DemoDataConfig(episodes=episodes, tasks=1, first_task=8, max_steps=max_steps, image_size=224),
                   progress=False)
    return store


def best_of_interleaved(arms: dict, rounds: int = 2) -> dict:
    """The fastest of `rounds` calls of each arm (a function returning seconds), calls interleaved
    so that drift in the machine's load hits every arm alike."""
    times: dict = {name: [] for name in arms}
    for _ in range(rounds):
        for name, run in arms.items():
            times[name].append(run())
    return {name: min(t) for name, t in times.items()}


def policy_data_path(policy, pre, cfg, args) -> dict:
    """K steps fed by the trainer's loader against K steps on one prepared batch (see the docstring)."""
    import torch

    from recap_data.policy.conditioning import IndicatorPrompts
    from recap_data.policy.data import load_policy_data
    from recap_data.policy.train import model_inputs, policy_loader

    k = args.throughput_steps
    with tempfile.TemporaryDirectory() as tmp:
        store = embedded_store(Path(tmp) / "data", args.episodes, 100)
        data = load_policy_data(store, {"base": 1.0}, None, "on")
        cfg.steps = 2 * k + 4  # the sampler's draws: two rounds of the loader arm, warm-up and slack
        batches = iter(policy_loader(store, data, store.manifest("base").features, cfg, policy.config.chunk_size))
        prompts = IndicatorPrompts("on", 0.0, seed=0)
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=2.5e-5)

        def step(batch: dict) -> None:
            loss, _ = policy(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        synthetic = model_inputs(next(batches), prompts, pre)  # one batch on the device: the steps without any loading
        policy.train()
        step(synthetic)  # first use (allocator, kernels) out of the timing
        sync(args.device)

        def timed(source) -> float:
            started = time.perf_counter()
            for _ in range(k):
                step(source())
            sync(args.device)
            return time.perf_counter() - started

        best = best_of_interleaved({"synthetic": lambda: timed(lambda: synthetic),
                                    "loader": lambda: timed(lambda: model_inputs(next(batches), prompts, pre))})
    return {"steps": k, "frames": len(data.frames), "num_workers": cfg.num_workers,
            "synthetic_step_s": round(best["synthetic"] / k, 4), "loader_step_s": round(best["loader"] / k, 4),
            "ratio": round(best["loader"] / best["synthetic"], 3), "target": 1.05}


def policy_run(family: str, args) -> dict:
    import torch

    from recap_data.policy.conditioning import prompt
    from recap_data.policy.lerobot_compat import sample_chunk
    from recap_data.policy.model import build_tokenizer, processors, reference_policy
    from recap_data.policy.train import PolicyTrainConfig

    torch.manual_seed(0)
    cfg = PolicyTrainConfig(type=family, chunk_size=50, n_action_steps=50, tokenizer_max_length=64,
                            train_expert_only=True, freeze_vision_encoder=True, batch_size=args.batch,
                            num_workers=args.num_workers)
    started = time.perf_counter()
    policy = reference_policy(cfg, FEATURES, layers=args.layers, dtype=args.dtype).to(args.device)
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
    data_path = policy_data_path(policy, pre, cfg, args) if args.throughput_steps else None
    return {"model": f"{family} (gemma_2b + gemma_300m expert)", "layers": args.layers or "all",
            "parameters": sum(p.numel() for p in policy.parameters()), "trainable": sum(p.numel() for p in trainable),
            "build_s": round(built, 1),
            "train_step_s": round(step_s, 1), "loss_finite": bool(torch.isfinite(loss)),
            "guided_chunk_s": round(chunk_s, 1), "chunk_shape": list(chunk.shape),
            "chunk_finite": bool(torch.isfinite(chunk).all()), "batch": b, "peak_rss_gb": peak_gb(),
            **({"data_path": data_path} if data_path else {})}


def value_run(args) -> dict:
    import torch
    import torch.nn.functional as F

    from recap_data.label_math.config import RewardConfig
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.value.model import ValueModelConfig, reference_model

    torch.manual_seed(0)
    started = time.perf_counter()
    cfg = ValueModelConfig(size="real", camera_keys=list(CAMERAS), state_mlp=True)
    model = reference_model(cfg, layers=args.layers)
    model.to(device=args.device, dtype=getattr(torch, args.dtype))
    built = time.perf_counter() - started
    b = args.value_batch or args.batch * 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 512, (b, 16), device=args.device)
    started = time.perf_counter()
    images = torch.rand(b, 2, 3, 224, 224, device=args.device)
    logits = model(images, torch.randn(b, 8, device=args.device), ids, torch.ones_like(ids))  # (B, bins)
    loss = F.cross_entropy(logits, torch.randint(0, 201, (b,), device=args.device))
    loss.backward()
    optimizer.step()
    sync(args.device)
    step_s = time.perf_counter() - started
    del optimizer
    model.float().cpu().eval()  # the checkpoint is written as training writes it; `label` puts it on its device
    with tempfile.TemporaryDirectory() as tmp:
        store = embedded_store(Path(tmp) / "data", 2, 20)
        frames = store.manifest("base").frames
        ckpt = value_checkpoint(model, store, Path(tmp) / "value")
        started = time.perf_counter()
        label(store, ["base"], ckpt, "bench", RewardConfig(), LabelConfig(batch_size=frames), progress=False)
        label_s = time.perf_counter() - started
        labeling = value_labeling(model, Path(tmp), args) if args.throughput_steps else None
    return {"model": "value (SigLIP so400m + Gemma 3 270M)", "layers": args.layers or "all",
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters()), "build_s": round(built, 1), "batch": b,
            "train_step_s": round(step_s, 1), "loss_finite": bool(torch.isfinite(loss)),
            "label_batch_frames": frames, "label_batch_s": round(label_s, 1),
            "label_frames_per_s": round(frames / label_s, 2), "peak_rss_gb": peak_gb(),
            **({"labeling": labeling} if labeling else {})}


def value_checkpoint(model, store, out: Path) -> Path:
    """`model` written as a value checkpoint whose return normalizers fit `store`'s base shard."""
    from recap_data.data.frames import load_frames
    from recap_data.label_math.config import RewardConfig
    from recap_data.label_math.tables import compute_returns
    from recap_data.train.tokenizer import tiny_tokenizer
    from recap_data.value.model import save_value_checkpoint

    reward = RewardConfig()
    _, normalizers = compute_returns(load_frames(store, ["base"]), reward)
    out.mkdir()
    tokenizer = tiny_tokenizer([TASK], 512, model.cfg.max_text_tokens)
    save_value_checkpoint(out, model, tokenizer, reward, normalizers,
                          {"format": "bench", "note": "random weights at the reference widths"})
    return out


def value_labeling(model, work: Path, args) -> dict:
    """`label`'s pass over a 224-px shard against the bare model over the same frames (see the docstring)."""
    import torch
    from common import bare_inference_s, value_inputs

    from recap_data.label_math.config import RewardConfig
    from recap_data.labels.infer import label
    from recap_data.labels.write import LabelConfig
    from recap_data.value.model import load_value_checkpoint

    store = embedded_store(work / "wide", args.episodes, 100)
    frames = store.manifest("base").frames
    ckpt_dir = value_checkpoint(model, store, work / "value-wide")
    batch = args.label_batch or 64
    ckpt = load_value_checkpoint(ckpt_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as `label` picks it
    model = ckpt.model.to(device)
    inputs = value_inputs(ckpt, store, "base", device)
    names = iter(range(100))

    def labeled() -> float:
        started = time.perf_counter()
        label(store, ["base"], ckpt_dir, f"throughput-{next(names)}", RewardConfig(), LabelConfig(batch_size=batch),
              progress=False)
        return time.perf_counter() - started

    bare_inference_s(model, tuple(t[:batch] for t in inputs), batch, device)  # first use out of the timing
    best = best_of_interleaved({"bare": lambda: bare_inference_s(model, inputs, batch, device), "label": labeled})
    return {"frames": frames, "batch": batch, "device": str(device),
            "bare_frames_per_s": round(frames / best["bare"], 2),
            "label_frames_per_s": round(frames / best["label"], 2),
            "ratio": round(best["label"] / best["bare"], 3), "target": 1.15}


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
    parser.add_argument("--value-batch", type=int, default=0, help="the value model's training batch (0: 4x --batch)")
    parser.add_argument("--layers", type=int, default=None, help="cut every tower to this many layers (a quick run)")
    parser.add_argument("--throughput-steps", type=int, default=0, help="time the data paths over this many steps")
    parser.add_argument("--episodes", type=int, default=8, help="episodes of the 224-px shard the data paths read")
    parser.add_argument("--num-workers", type=int, default=0, help="the policy loader's worker processes")
    parser.add_argument("--label-batch", type=int, default=0, help="frames per value-model batch in labeling (0: 64)")
    parser.add_argument("--results", type=Path, default=None, help=f"default: {RESULTS} (none with --layers)")
    args = parser.parse_args()
    if args.results is None and args.layers is None:
        args.results = RESULTS
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

    if args.results is not None:
        write_results(args.results, {"device": device_name(args.device), "dtype": args.dtype, "machine": machine_info(),
                                     "torch_threads": torch.get_num_threads(), "models": rows})


if __name__ == "__main__":
    main()
