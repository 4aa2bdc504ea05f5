"""Sequential camera decoding (recap_data.store.decode): both decoders against LeRobot's own frames."""

import re
import subprocess

import numpy as np
import pytest

from recap_data.errors import RecapError
from recap_data.store.decode import decode_cameras, episode_table, ffmpeg_exe, iter_episode_frames
from recap_data.store.schema import camera_keys

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
    for decoder in DECODERS:
        got = decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder)
        for k in keys:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"{decoder} {k}")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_share_of_the_episodes_and_going_back(store, make_shard, decoder):
    m = make_shard("base", episodes=5, tasks=2)
    keys = camera_keys(m.features)
    whole = decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder)
    episodes = episode_table(store.shard_path("base"))
    # Every other episode (a process's share: frames in between are skipped), then going back to
    # the first episode (the reader reopens the file).
    order = episodes.iloc[[1, 3, 0]]
    got = list(iter_episode_frames(store.shard_path("base"), m.features, keys, order, threads=1, decoder=decoder))
    assert [int(e["episode_index"]) for e, _ in got] == [1, 3, 0]
    for episode, cams in got:
        rows = slice(int(episode["dataset_from_index"]), int(episode["dataset_to_index"]))
        for k in keys:
            np.testing.assert_array_equal(cams[k], whole[k][rows])


def test_stopping_early_leaves_no_ffmpeg_process(store, make_shard):
    m = make_shard("base", episodes=6, image_size=64)  # more than a pipe buffer (64 KiB) after episode 0
    keys = camera_keys(m.features)
    stream = iter_episode_frames(store.shard_path("base"), m.features, keys, decoder="ffmpeg")
    next(stream)
    assert len(ffmpeg_processes(store)) >= len(keys)  # the check below can fail: the readers run now
    stream.close()
    assert ffmpeg_processes(store) == []


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_damaged_video_is_a_one_line_error(store, make_shard, decoder):
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
        with pytest.raises(RecapError, match=rf"^{re.escape(str(video))}: {error}.*; run `recap-data shards verify`$"):
            decode_cameras(store.shard_path("base"), m.features, keys, m.frames, decoder=decoder)
        if decoder == "ffmpeg":  # its processes are reaped after the error (PyAV starts none)
            assert ffmpeg_processes(store) == []


def test_unknown_decoder_is_refused(store, make_shard):
    m = make_shard("base")
    with pytest.raises(RecapError, match="decoder 'opencv' is invalid: use one of auto, ffmpeg, pyav"):
        decode_cameras(store.shard_path("base"), m.features, camera_keys(m.features), m.frames, decoder="opencv")
