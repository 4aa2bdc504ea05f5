"""The training loop both trainers run (value model and pi0): the accelerator and seed, AdamW with
a linear warm-up and cosine decay, the finite-loss check, the loss log, and what a run records.

    accelerator = start_run(out, force, "value checkpoint", cfg.seed, cfg.bf16)
    model, losses, wall = train_loop(model, loader, loss_of, cfg, accelerator, section="value", ...)
    provenance = {**run_provenance(cfg, accelerator), ...}

Data-parallel runs (torchrun / accelerate launch) go through the same code: each process runs
the loop, and only the main one goes on to write the checkpoint.
"""

import math
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recap_data.errors import RecapError
from recap_data.io import refuse_existing


def start_run(out: Path, force: bool, what: str, seed: int, bf16: bool, find_unused_parameters: bool = False):
    """Refuse an existing output (before any training), then an Accelerator and the seed."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    refuse_existing(Path(out), force, what)
    gpu = torch.cuda.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    # cpu=True lets torchrun/accelerate launch run data-parallel over gloo on a machine without GPUs.
    accelerator = Accelerator(cpu=not gpu, mixed_precision="bf16" if bf16 and gpu else "no", kwargs_handlers=handlers)
    set_seed(seed)
    return accelerator


def train_loop(model, loader, loss_of, cfg, accelerator, *, section: str, desc: str, progress: bool,
               prepare_loader: bool = True, clip_norm: float | None = None):
    """Run cfg.steps optimizer steps over `loader` (one batch per step); loss_of(model, batch) is
    the scalar loss. cfg has steps, lr, weight_decay, warmup_steps and log_every. prepare_loader:
    let accelerate shard the loader over processes (False when the sampler already does).
    Returns (the unwrapped model, the LossLog, wall seconds of the loop); every process returns."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg.steps, cfg.warmup_steps))
    if prepare_loader:
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    else:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    losses = LossLog(cfg.steps, cfg.log_every, desc, progress and accelerator.is_main_process)
    started = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        with accelerator.autocast():
            loss = loss_of(model, batch)
        if not torch.isfinite(loss):
            raise RecapError(f"{section} training diverged at step {step} (loss {loss.item()}); lower {section}.lr")
        accelerator.backward(loss)
        if clip_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.add(step, loss.item(), scheduler.get_last_lr()[0])
    losses.close()
    wall = time.perf_counter() - started
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), losses, wall


def run_provenance(cfg, accelerator) -> dict:
    """What every checkpoint records of its run (a trainer adds its data and init)."""
    return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "steps": cfg.steps,
            "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
            "config": asdict(cfg)}


def lr_schedule(steps: int, warmup_steps: int):
    """LambdaLR factor: linear warm-up over `warmup_steps`, then cosine decay to 0 at `steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


class LossLog:
    """A trainer's loss record: the running loss on the progress bar, and one loss.csv row
    (step, mean train_loss since the last row, lr) every `log_every` steps and at the last."""

    def __init__(self, steps: int, log_every: int, desc: str, show: bool):
        from tqdm import tqdm

        self.steps, self.log_every = steps, log_every
        self.rows: list[dict] = []
        self.window: list[float] = []
        self.bar = tqdm(total=steps, desc=desc, unit="step", disable=not show)

    def add(self, step: int, loss: float, lr: float) -> None:
        self.window.append(loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{np.mean(self.window[-10:]):.3f}")
        if step % self.log_every == 0 or step == self.steps:
            self.rows.append({"step": step, "train_loss": float(np.mean(self.window)), "lr": lr})
            self.window = []

    def close(self) -> None:
        self.bar.close()
