"""The embedded world's demonstrations are learnable: remaining steps to success follow from state and images.

A 5-nearest-neighbour regressor fitted on some successful episodes predicts the remaining
steps of other (held-out) successful episodes far better than the best constant does: from the
state and task, and from the two camera images (the wrist view carries most of it: at 32 px
the agentview moves the effector by about a pixel per 8 steps). (Failures run to the step cap whatever the
scene shows, so their remaining steps are not a function of one frame, as in LIBERO.)
"""

import numpy as np

from recap_data.store.schema import AGENTVIEW_KEY, STATE_KEY, WRIST_KEY
from recap_data.world.demonstrators import demonstrate
from recap_data.world.env import WorldConfig


def successful_frames(n_episodes: int):
    """Every third frame of expert episodes: episode id, state+task, images, remaining steps."""
    rows = []
    for e in range(n_episodes):
        task = e % 3
        frames = demonstrate("expert", WorldConfig(task, image_size=32, max_steps=60), e // 3, [0, e])["frames"]
        for t in range(0, len(frames), 3):
            f = frames[t]
            rows.append((e, np.concatenate([f[STATE_KEY], np.eye(3)[task]]),
                         np.concatenate([f[AGENTVIEW_KEY], f[WRIST_KEY]]).astype(np.float32).ravel() / 255,
                         len(frames) - 1 - t))
    return (np.array([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
            np.array([r[3] for r in rows]))


def knn_mae(x_train, y_train, x_test, y_test, k=5) -> float:
    # |a - b|^2 = |a|^2 - 2 a.b + |b|^2: one (n_test, n_train) matrix, not the (n_test, n_train, dim)
    # broadcast (gigabytes for image rows)
    d = (x_test**2).sum(1)[:, None] - 2 * x_test @ x_train.T + (x_train**2).sum(1)[None, :]  # (n_test, n_train)
    nearest = np.argsort(d, axis=1)[:, :k]  # (n_test, k)
    return float(np.abs(y_train[nearest].mean(1) - y_test).mean())


def test_remaining_steps_are_predictable_from_state_and_from_images():
    episode, state, images, remaining = successful_frames(60)
    train, test = episode < 45, episode >= 45  # whole episodes held out
    constant = float(np.abs(np.median(remaining[train]) - remaining[test]).mean())
    # position (m) weighs most; gripper opening is in cm-scale units; rotation is an episode nuisance
    scale = np.array([5.0] * 3 + [0.3] * 3 + [10.0] * 2 + [1.0] * 3)
    from_state = knn_mae(state[train] * scale, remaining[train], state[test] * scale, remaining[test])
    from_images = knn_mae(images[train], remaining[train], images[test], remaining[test])
    assert from_state < 0.5 * constant, (from_state, constant)
    assert from_images < 0.5 * constant, (from_images, constant)
