"""`recap-data view`: episode videos and contact sheets of a real label set, the episodes chosen,
and bad input refused with nothing written."""

import json
import shutil

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from recap_data.cli.main import cli
from recap_data.reports import draw as view_draw
from recap_data.reports.view import choose_episodes, render_episodes, stem, view
from recap_data.store.db import connect
from recap_data.store.decode import episode_table, iter_episode_frames
from recap_data.store.label_sets import read_labels
from recap_data.store.store import ShardStore


def select_episodes(store: ShardStore, name: str, **chosen) -> list[dict]:
    return choose_episodes(connect(store.root, labels=name), name, **chosen)


def render_episode(store: ShardStore, name: str, shard: str, episode_index: int, folder) -> dict:
    """One episode's video and contact sheet into `folder`, as `view` renders each."""
    con = connect(store.root, labels=name)
    chosen = choose_episodes(con, name, [f"{shard}:{episode_index}"])
    return render_episodes(store, name, con, chosen, folder, sheets=True, progress=False)[0]


def decoded(mp4) -> list[np.ndarray]:
    with av.open(str(mp4)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def per_episode(store: ShardStore):
    """The label set's episodes by pandas: mean advantage, start value, actual return from frame 0."""
    labels = read_labels(store, "raw")
    labels["shard"] = labels["shard"].astype(str)
    g = labels.groupby(["shard", "episode_index"])
    first = labels[labels["frame_index"] == 0].set_index(["shard", "episode_index"])
    df = g.agg(mean_advantage=("advantage", "mean"), length=("frame_index", "size")).join(
        first[["value", "return_norm"]]).reset_index()
    df["abs_error"] = (df["value"] - df["return_norm"]).abs()
    return df


def keys(episodes) -> list[tuple]:
    return [(e["shard"], e["episode_index"]) for e in episodes]


def test_videos_show_every_frame_with_the_cameras_and_a_moving_cursor(labeled, tmp_path):
    store = labeled[0]
    out = tmp_path / "episodes"
    facts = view(store, "raw", out, episodes=["more:3"], best=1, progress=False)
    assert keys(facts)[0] == ("more", 3) and len(facts) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{e['shard']}-ep{e['episode_index']:04d}{s}" for e in facts for s in (".mp4", ".png")] + ["episodes.json"])
    listed = json.loads((out / "episodes.json").read_text())["episodes"]
    assert keys(listed) == keys(facts)

    f = facts[0]
    frames = decoded(f["mp4"])
    labels = read_labels(store, "raw")
    length = int(((labels["shard"] == "more") & (labels["episode_index"] == 3)).sum())
    assert len(frames) == f["frames"] == f["length"] == length
    assert frames[0].shape == (f["height"], f["width"], 3) and f["height"] % 2 == 0 and f["width"] % 2 == 0
    with av.open(f["mp4"]) as container:
        assert container.streams.video[0].codec_context.name in ("libdav1d", "libaom-av1", "av1", "vp9", "libvpx-vp9")
    sheet = Image.open(f["sheet"])
    assert sheet.size == (f["width"], f["height"]) and sheet.mode == "RGB"

    # The cameras are where the layout puts them, scaled up (compared through the lossy codec).
    shard_dir = store.shard_path("more")
    features = store.manifest("more").features
    cams = [k for k, v in features.items() if v["dtype"] in ("video", "image")]
    table = episode_table(shard_dir)
    (_, images), = iter_episode_frames(shard_dir, features, cams, table[table["episode_index"] == 3])
    shapes = [images[k].shape[1:] for k in cams]
    scale = view_draw.camera_scale(shapes)
    x = (f["width"] - (sum(s[1] * scale for s in shapes) + view_draw.GAP * (len(cams) - 1))) // 2
    for k, (h, w, _) in zip(cams, shapes, strict=True):
        for t in (0, length - 1):
            expected = np.repeat(np.repeat(images[k][t], scale, 0), scale, 1).astype(int)
            got = frames[t][view_draw.TITLE_H + 4:view_draw.TITLE_H + 4 + h * scale, x:x + w * scale].astype(int)
            assert np.abs(got - expected).mean() < 12, (k, t)
        x += w * scale + view_draw.GAP
    # The cursor moves: the curves differ between the first and the last frame, the title does not.
    panel = slice(f["height"] - view_draw.PANEL_H + 20, f["height"] - 30)
    assert np.abs(frames[0][panel].astype(int) - frames[-1][panel]).max() > 100
    assert np.abs(frames[0][:view_draw.TITLE_H].astype(int) - frames[-1][:view_draw.TITLE_H]).mean() < 2


def test_selections_pick_the_episodes_pandas_finds(labeled):
    store = labeled[0]
    def pairs(d, n):
        return list(zip(d["shard"].head(n), d["episode_index"].head(n), strict=True))

    df = per_episode(store)
    best = df.sort_values(["mean_advantage", "shard", "episode_index"], ascending=[False, True, True])
    worst = df.sort_values(["mean_advantage", "shard", "episode_index"])
    wrong = df.sort_values(["abs_error", "shard", "episode_index"], ascending=[False, True, True])
    assert keys(select_episodes(store, "raw", best=3)) == pairs(best, 3)
    assert keys(select_episodes(store, "raw", worst=2)) == pairs(worst, 2)
    got = select_episodes(store, "raw", most_wrong=3)
    assert keys(got) == pairs(wrong, 3)
    top = df.set_index(["shard", "episode_index"]).loc[keys(got)[0]]
    assert got[0]["start_value"] == pytest.approx(top["value"]) and got[0]["length"] == top["length"]
    assert got[0]["value_error"] == pytest.approx(top["value"] - top["return_norm"])
    assert got[0]["mean_advantage"] == pytest.approx(top["mean_advantage"])
    assert {"task", "success", "positive_fraction", "start_return"} <= set(got[0])

    # --episode first, in the order given; an episode chosen twice appears once, with both reasons.
    other, first_best = ("{}:{}".format(*pairs(worst, 1)[0]), "{}:{}".format(*pairs(best, 1)[0]))
    chosen = select_episodes(store, "raw", episodes=[other, first_best], best=2)
    assert keys(chosen) == [pairs(worst, 1)[0], *pairs(best, 2)]
    assert chosen[1]["chosen"] == ["episode", "best"] and chosen[2]["chosen"] == ["best"]
    assert select_episodes(store, "raw") == []


def run(root, *args):
    return CliRunner().invoke(cli, ["--root", str(root), *args], catch_exceptions=True)


def one_line_error(result, naming: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and naming in lines[0], result.output


def tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_cli_renders_the_default_selection_and_refuses_an_existing_output(labeled, tmp_path):
    root, out = labeled[0].root, tmp_path / "v"
    before = tree(root)
    result = run(root, "view", "raw", "--out", str(out))
    assert result.exit_code == 0, result.output
    written = json.loads((out / "episodes.json").read_text())["episodes"]
    reasons = {r for e in written for r in e["chosen"]}
    assert reasons == {"best", "worst", "most wrong"} and 1 <= len(written) <= 3
    assert f"wrote {len(written)} episode videos" in result.output
    assert tree(root) == before  # nothing written into the data root

    first = tree(out), (out / "episodes.json").read_bytes()
    one_line_error(run(root, "view", "raw", "--out", str(out), "--episode", "base:1"), "already exists")
    assert (tree(out), (out / "episodes.json").read_bytes()) == first
    result = run(root, "view", "raw", "--out", str(out), "--episode", "base:1", "--force")
    assert result.exit_code == 0, result.output
    assert tree(out) == ["base-ep0001.mp4", "base-ep0001.png", "episodes.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left beside it


@pytest.mark.parametrize(("args", "naming"), [
    (["--episode", "base:99"], "no episode base:99 (shard base has episodes 0..7)"),
    (["--episode", "nosuch:0"], "no episode nosuch:0"),
    (["--episode", "base"], "--episode 'base' is invalid: use SHARD:EPISODE"),
    (["--best", "-1"], "--best")])
def test_cli_refuses_unknown_episodes_with_nothing_written(labeled, tmp_path, args, naming):
    root, out = labeled[0].root, tmp_path / "v"
    before = tree(root)
    one_line_error(run(root, "view", "raw", "--out", str(out), *args), naming)
    assert not out.exists() and tree(root) == before and list(tmp_path.iterdir()) == []


def test_a_label_set_whose_shard_changed_or_is_gone_is_refused(labeled, tmp_path):
    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    manifest = store.shard_path("more") / "manifest.json"
    data = json.loads(manifest.read_text())
    data["digest"] = "sha256:" + "0" * 64  # as if the shard had been rewritten
    manifest.write_text(json.dumps(data))
    out = tmp_path / "v"
    one_line_error(run(store.root, "view", "raw", "--out", str(out), "--episode", "base:0"), "shard more changed")
    assert not out.exists()
    shutil.rmtree(store.shard_path("more"))
    one_line_error(run(store.root, "view", "raw", "--out", str(out)), "label set 'raw' names shard 'more', which is "
                                                                         "missing")
    assert not out.exists()


def test_a_render_that_fails_leaves_no_file_and_no_directory(labeled, tmp_path, monkeypatch):
    store = labeled[0]
    compose = view_draw.EpisodeFrames.compose

    def fail_at_frame_3(self, t, cameras):
        if t == 3:
            raise RuntimeError("killed mid-episode")
        return compose(self, t, cameras)

    monkeypatch.setattr(view_draw.EpisodeFrames, "compose", fail_at_frame_3)
    with pytest.raises(RuntimeError):
        render_episode(store, "raw", "base", 1, tmp_path)
    with pytest.raises(RuntimeError):
        view(store, "raw", tmp_path / "v", best=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # no mp4, no temporary sibling, no staging directory

    monkeypatch.undo()
    facts = render_episode(store, "raw", "base", 1, tmp_path)
    name = stem({"shard": "base", "episode_index": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.mp4", f"{name}.png"]
    assert len(decoded(tmp_path / f"{name}.mp4")) == facts["frames"] and facts["sheet"] == str(tmp_path / f"{name}.png")


def test_encoding_video_leaves_this_process_scheduling_as_it_was(labeled, tmp_path):
    """SVT-AV1 run as root switches the thread that opens an encoder to real-time FIFO and leaves it
    (io.normal_scheduling): the view's mp4s and a one-camera shard's videos, both encoded in this
    process, leave its scheduling as it was. As root (with CAP_SYS_NICE), an unguarded encode changes it."""
    import os

    from recap_data.store.schema import OUTCOME_FEATURES
    from recap_data.store.writer import EpisodeRecorder

    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    view(labeled[0], "raw", tmp_path / "episodes", best=1, progress=False)
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    features = {"observation.images.image": {"dtype": "video", "shape": (32, 32, 3),
                                             "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
                "action": {"dtype": "float32", "shape": (7,), "names": None}, **OUTCOME_FEATURES}
    recorder = EpisodeRecorder(tmp_path / "one-camera", "one-camera", features, 20, None, use_videos=True)
    for _ in range(3):
        recorder.add_frame({"observation.images.image": np.zeros((32, 32, 3), np.uint8),
                            "observation.state": np.zeros(8, np.float32), "action": np.zeros(7, np.float32)}, "task")
    recorder.save_episode(success=True)
    assert recorder.finish() == (1, 3)
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    try:  # what the guard undoes, where this process may go real-time (root with CAP_SYS_NICE)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        may_go_real_time = True
    except PermissionError:
        may_go_real_time = False
    os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
    if may_go_real_time and os.geteuid() == 0:
        with av.open(str(tmp_path / "bare.mp4"), "w") as container:
            stream = container.add_stream("libsvtav1", rate=20)
            stream.width = stream.height = 64
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        try:
            assert os.sched_getscheduler(0) == os.SCHED_FIFO
        finally:
            os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
