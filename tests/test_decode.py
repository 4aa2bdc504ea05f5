"""Camera decoding by a pool of decoders (recap_data.store.decode): both decoders, 1 and 2 workers, one
run and many, against LeRobot's own frames; order, early stop, damage, pool size."""

import itertools
import os
import re
import subprocess
import time

import numpy as np
import pytest

from recap_data.errors import RecapError
from recap_data.io import pool_size
from recap_data.labels.write import LabelConfig
from recap_data.policy.train import PolicyTrainConfig
from recap_data.store import decode
from recap_data.store.decode import decode_cameras, episode_table, ffmpeg_exe, iter_episode_frames
from recap_data.store.schema import camera_keys
from recap_data.value.train import ValueTrainConfig

DECODERS = ["ffmpeg", "pyav"]


def lerobot_frames(store, shard: str, keys: list[str]) -> dict[str, np.ndarray]:
    """{camera: (N, H, W, 3) uint8} as LeRobotDataset decodes them, one frame at a time."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(f"recap-data/{shard}", root=store.shard_path(shard))
    frames = {k: [] for k in keys}
    for i in range(len(ds)):
        item = ds[i]
        for k in keys:  # float (3, H, W) in [0, 1] -> uint8 (H, W, 3)
            frames[k].append((item[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return {k: np.stack(v) for k, v in frames.items()}


def ffmpeg_processes(store) -> list[str]:
    """Command lines of running ffmpeg processes that read a file of `store`."""
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith(ffmpeg_exe()) and str(store.root) in line]


def test_the_ffmpeg_binary_is_installed():
    assert ffmpeg_exe() is not None  # imageio-ffmpeg is a dependency: the default decoder is ffmpeg


@pytest.mark.parametrize("use_videos", [True, False], ids=["video", "png"])
def test_both_decoders_give_lerobots_frames(store, make_shard, use_videos):
    m = make_shard("base", episodes=4, tasks=2, use_videos=use_videos,
                   image_size=32 if use_videos else 16)
    keys = camera_keys(m.features)
    assert len(keys) == 2
    expected = lerobot_frames(store, "base", keys)
    # One run for the shard, and one per episode (each job seeks to its episode), on 1 and 2 workers.
    for decoder, workers, run_frames in itertools.product(DECODERS, [1, 2], [None, 1]):
        got = decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder, workers=workers,
                             run_frames=run_frames)
        for k in keys:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"{decoder} {workers} {run_frames} {k}")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_share_of_the_episodes_in_order_and_going_back(store, make_shard, decoder):
    m = make_shard("base", episodes=5, tasks=2)
    keys = camera_keys(m.features)
    whole = decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder)
    episodes = episode_table(store.shard_path("base"))
    # Episodes skipped (a process's share: decoded and dropped within a run, or sought past),
    # consecutive ones, and going back (a new run seeks back).
    order = [1, 3, 4, 0, 2]
    for workers, run_frames in itertools.product([1, 2], [1, 10_000]):
        got = list(iter_episode_frames(store.shard_path("base"), m.features, keys, episodes.iloc[order],
                                       decoder=decoder, workers=workers, run_frames=run_frames))
        assert [int(e["episode_index"]) for e, _ in got] == order
        for episode, cams in got:
            rows = slice(int(episode["dataset_from_index"]), int(episode["dataset_to_index"]))
            for k in keys:
                np.testing.assert_array_equal(cams[k], whole[k][rows], err_msg=f"{workers} {run_frames} {k}")


@pytest.mark.parametrize("workers", [1, 2])
def test_stopping_early_leaves_no_ffmpeg_process(store, make_shard, monkeypatch, workers):
    m = make_shard("base", episodes=6, image_size=64)  # more than a pipe buffer (64 KiB) per episode
    keys = camera_keys(m.features)
    started, popen = [], decode._Pool.popen

    def held(pool, *args):  # the jobs of later runs keep their ffmpeg running until the reader stops
        proc = popen(pool, *args)
        started.append(proc)
        while len(started) > len(keys) and not pool.stopping:
            time.sleep(0.01)
        return proc

    monkeypatch.setattr(decode._Pool, "popen", held)
    stream = iter_episode_frames(store.shard_path("base"), m.features, keys, decoder="ffmpeg", workers=workers,
                                 run_frames=1)
    next(stream)
    deadline = time.monotonic() + 60
    while len(started) <= len(keys) and time.monotonic() < deadline:  # a job of the next run has started
        time.sleep(0.01)
    assert len(ffmpeg_processes(store)) >= 1  # the check below can fail: a decoder runs now
    stream.close()
    assert ffmpeg_processes(store) == []
    assert all(proc.poll() is not None for proc in started)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_damaged_video_is_a_one_line_error(store, make_shard, decoder, workers):
    m = make_shard("base", episodes=3)
    keys = camera_keys(m.features)
    video = next(store.shard_path("base").glob("videos/*/chunk-000/file-000.mp4"))
    data = video.read_bytes()
    damaged = bytearray(data)
    damaged[len(data) // 2:len(data) // 2 + 200] = bytes(b ^ 0xFF for b in damaged[len(data) // 2:len(data) // 2 + 200])
    for content, error in [(data[:len(data) * 2 // 3], r"no frames at every position \d+\.\.\d+"),  # cut short
                           (bytes(damaged), r"(the video ends after \d+ of \d+ frames|"  # a frame fails to decode
                                           r"the frame at position \d+ failed to decode)")]:
        video.write_bytes(content)
        one_line = rf"^{re.escape(str(video))}: {error}.*; run `recap-data shards verify`$"
        for run_frames in [None, 1]:  # one job, and one per episode (the others decode beside the damaged one)
            with pytest.raises(RecapError, match=one_line):
                decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder, workers=workers,
                               run_frames=run_frames)
            if decoder == "ffmpeg":  # its processes are reaped after the error (PyAV starts none)
                assert ffmpeg_processes(store) == []


def test_unknown_decoder_and_no_workers_are_refused(store, make_shard):
    m = make_shard("base")
    keys = camera_keys(m.features)
    with pytest.raises(RecapError, match="decoder 'opencv' is invalid: use one of auto, ffmpeg, pyav"):
        decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder="opencv")
    with pytest.raises(RecapError, match=r"^decoder workers = 0 is invalid: use a number >= 1$"):
        decode_cameras(store.shard_path("base"), m.features, keys, m.frames, workers=0)


def test_pool_size_from_the_free_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert pool_size(3) == 3  # an explicit size wins
    assert pool_size(0, reserved=1) == 15  # the cores less the model's thread
    assert pool_size(0, reserved=0) == 16
    assert pool_size(0, reserved=16) == 1  # never none
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes of a node share its cores
    assert pool_size(0, reserved=1) == 3


@pytest.mark.parametrize("cls", [LabelConfig, ValueTrainConfig, PolicyTrainConfig])
def test_decode_workers_out_of_range_is_a_one_line_error(cls):
    assert cls().decode_workers == 0  # from the free cores
    with pytest.raises(RecapError, match=r"^\w+: field 'decode_workers' = -1 is invalid: use a number >= 0$"):
        cls(decode_workers=-1).validate()
