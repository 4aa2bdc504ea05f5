"""The parts of a training loop both trainers use: the learning-rate schedule and the loss log."""

import math

import numpy as np


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
