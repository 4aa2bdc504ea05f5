"""Labeling: the advantage math by hand, `recap-data label` end to end, relabel, refusals, SIGKILL."""

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PYTHON, run_cli, torchrun
from label_reference import threshold

from recap_data.data.frame_dataset import ShardFrames
from recap_data.data.frames import load_frames
from recap_data.errors import RecapError
from recap_data.io import FAILPOINT_ENV
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels
from recap_data.labels.infer import label
from recap_data.labels.relabel import relabel, source_advantage
from recap_data.labels.write import LabelConfig
from recap_data.store.db import connect
from recap_data.store.label_sets import label_set_names, label_set_path, read_labels, read_manifest
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import directory_digest
from recap_data.value.model import load_value_checkpoint

REWARD = RewardConfig(number_of_bins=21, c_fail=20, normalization="global", reward_normalizer=40)


def frames_with_values(specs):
    """specs: (task, success, values, interventions) -> frames table with a `value` column."""
    rows = []
    for e, (task, success, values, interventions) in enumerate(specs):
        rows += [{"shard": "s", "episode_index": e, "frame_index": t, "index": len(rows) + t, "task": task,
                  "success": success, "is_intervention": t in interventions, "value": v}
                 for t, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_advantages_by_hand():
    frames = frames_with_values([
        ("a", True, [-0.21, -0.16, -0.12, -0.04, 0.0], ()),  # T=5 >= N=3
        ("a", False, [-0.61, -0.53], ()),  # shorter than N: Monte-Carlo advantage
        ("a", True, [-0.1, -0.13, -0.07, -0.11], (1,)),  # frame 1 is a human intervention
    ])
    labels, per_task = build_labels(frames, REWARD, AdvantageConfig(n_steps=3, positive_fraction=0.25), {"a": 40.0})
    n = 40.0
    expected_next = [-0.04, 0.0, 0, 0, 0, 0, 0, -0.11, 0, 0, 0]  # V(o_{t+3}) inside the episode, else 0
    expected_nstep = [-3 / n, -3 / n, -2 / n, -1 / n, 0.0,  # success: three -1s, then the rest (0 at the end)
                      -21 / n, -20 / n,  # failure: -1 then -20
                      -3 / n, -2 / n, -1 / n, 0.0]
    values = frames["value"].to_numpy()
    np.testing.assert_allclose(labels["value_next"], expected_next)
    np.testing.assert_allclose(labels["nstep_return"], expected_nstep)
    np.testing.assert_allclose(labels["advantage"], np.array(expected_nstep) + expected_next - values)
    assert labels["advantage"].dtype == np.float64
    # 11 frames x 0.25 -> round(2.75) = 3 frames above epsilon, plus the intervention frame
    top3 = np.sort(labels["advantage"].to_numpy())[::-1][:3]
    assert (labels["advantage"] > labels["epsilon"]).sum() == 3
    assert set(labels.loc[labels["advantage"] > labels["epsilon"], "advantage"]) == set(top3)
    assert labels.loc[labels["is_intervention"], "indicator"].all()
    assert per_task["a"]["positive_fraction"] == labels["indicator"].mean() == 4 / 11


def test_threshold_realises_the_fraction_exactly_without_ties():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        a = rng.normal(size=n)
        for p in (0.01, 0.3, 0.5, 0.99):
            assert (a > threshold(a, p)).sum() == round(p * n)


def test_nan_values_are_refused():
    frames = frames_with_values([("a", True, [-0.2, float("nan"), 0.0], ())])
    with pytest.raises(RecapError, match="episode 0 frame 1 has value nan"):
        build_labels(frames, REWARD, AdvantageConfig(n_steps=3), {"a": 40.0})


def test_every_frame_labelled_once_with_the_models_values(labeled):
    store, ckpt = labeled
    m = read_manifest(store, "raw")
    rows = read_labels(store, "raw")
    assert len(rows) == m.frames == sum(store.manifest(s).frames for s in ("base", "more"))
    assert not rows.duplicated(["shard", "episode_index", "frame_index"]).any()
    assert m.value_checkpoint["digest"] == load_value_checkpoint(ckpt).digest
    assert [s["digest"] for s in m.shards] == [store.manifest(s).digest for s in ("base", "more")]
    for task, stats in m.per_task.items():  # within one frame of the target
        n = stats["frames"]
        assert abs(stats["positive_fraction"] * n - 0.3 * n) <= 1, (task, stats)
    # The streamed, batched values equal the model on frames decoded by LeRobot itself.
    loaded = load_value_checkpoint(ckpt)
    some = rows.groupby("shard", observed=True).sample(5, random_state=0).reset_index(drop=True)
    frames = load_frames(store, ["base", "more"]).merge(some[["shard", "index"]], on=["shard", "index"])
    frames = frames.assign(return_bin=0, return_norm=0.0).sort_values(["shard", "index"], ignore_index=True)
    dataset = ShardFrames(store, frames, loaded.model.cfg.camera_keys)  # no preloading: LeRobotDataset.__getitem__
    batch = [dataset[i] for i in range(len(dataset))]
    ids, mask = loaded.encoder([b["task"] for b in batch])
    with torch.no_grad():
        logits = loaded.model(torch.stack([b["images"] for b in batch]), torch.stack([b["state"] for b in batch]),
                              ids, mask)
    expected = loaded.model.values(logits).numpy()
    got = some.sort_values(["shard", "index"])["value"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.fixture(scope="module")
def relabeled(labeled):
    """The label set raw-40: raw's values relabelled at 40% positive with N = 5 (made once per module)."""
    store, _ = labeled
    if not label_set_path(store, "raw-40").exists():
        relabel(store, "raw", "raw-40", source_advantage(store, "raw", {"positive_fraction": 0.4, "n_steps": 5}))
    return read_manifest(store, "raw-40")


def test_relabel_from_stored_values(labeled, relabeled):
    store, _ = labeled
    m = relabeled
    old, new = read_labels(store, "raw"), read_labels(store, "raw-40")
    np.testing.assert_array_equal(old["value"], new["value"])
    assert m.parent["name"] == "raw" and m.advantage["positive_fraction"] == 0.4 and m.advantage["n_steps"] == 5
    assert m.advantage["threshold"] == "per_task"  # not overridden: the source's
    assert abs(new["indicator"].mean() - 0.4) < 0.02
    con = connect(store.root, labels="raw-40")
    n, pos = con.execute("SELECT count(*), avg(indicator::INT) FROM labeled_frames").fetchone()
    assert n == m.frames and abs(pos - m.positive_fraction) < 1e-12
    sets = dict(con.execute("SELECT label_set, parent FROM label_sets").fetchall())
    assert sets["raw-40"] == "raw" and sets["raw"] is None


def test_refusals_leave_existing_label_sets_untouched(labeled, relabeled, tmp_path):
    store, ckpt = labeled
    before = directory_digest(label_set_path(store, "raw"))
    with pytest.raises(RecapError, match="already exists"):
        relabel(store, "raw", "raw", source_advantage(store, "raw", {"positive_fraction": 0.5}))
    with pytest.raises(RecapError, match="other reward params"):
        label(store, ["base"], ckpt, "other", RewardConfig(c_fail=5), LabelConfig(), progress=False)
    with pytest.raises(RecapError, match="no shards"):
        label(store, [], ckpt, "other", RewardConfig(), LabelConfig(), progress=False)
    assert directory_digest(label_set_path(store, "raw")) == before
    # A shard that changed since the values were computed: simulate with a copy of the store.
    import shutil

    copy = ShardStore(tmp_path / "data")
    shutil.copytree(store.root, copy.root)
    manifest = copy.shard_path("more") / "manifest.json"
    data = json.loads(manifest.read_text())
    data["digest"] = "sha256:" + "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(RecapError, match="shard more changed since its values were computed"):
        relabel(copy, "raw", "again")
    broken = label_set_path(copy, "raw-40") / "manifest.json"
    broken.write_text(broken.read_text()[:50])  # a torn manifest: one clear line, not a traceback
    with pytest.raises(RecapError, match="raw-40/manifest.json: unreadable label set manifest"):
        connect(copy.root)
    result = run_cli("relabel", "raw", "--out", "raw", "--positive-fraction", "0.5", root=store.root)
    assert result.exit_code == 2 and "already exists" in result.output
    again = ShardStore(tmp_path / "again")  # --force works; on a copy, so that raw-40 stays as other tests know it
    shutil.copytree(store.root, again.root)
    forced = run_cli("relabel", "raw-40", "--out", "raw-40", "--positive-fraction", "0.2", "--force", root=again.root)
    assert forced.exit_code == 0, forced.output
    assert read_manifest(again, "raw-40").advantage["positive_fraction"] == 0.2
    assert directory_digest(label_set_path(store, "raw")) == before


@pytest.mark.slow
def test_sigkill_before_the_rename_leaves_no_label_set(labeled):
    store, ckpt = labeled
    before = directory_digest(label_set_path(store, "raw"))
    env = {**os.environ, FAILPOINT_ENV: "before_rename"}
    for args in (["label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "killed"],
                 ["relabel", "raw", "--out", "raw", "--force", "--positive-fraction", "0.1"]):
        proc = subprocess.run([PYTHON, "-m", "recap_data.cli.main", "--root", str(store.root), *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not label_set_path(store, "killed").exists()
    assert directory_digest(label_set_path(store, "raw")) == before
    assert read_manifest(store, "raw").advantage["positive_fraction"] == 0.3
    # the next writer of that name cleans the dead process's temporary directory
    relabel(store, "raw", "killed")
    assert not list((store.root / "labels").glob(".killed.tmp.*"))


def test_report_tables_and_plots(labeled, tmp_path):
    store, _ = labeled
    out = tmp_path / "report"
    result = run_cli("report", "raw", "--out", str(out), "--bins", "10", "--episodes", "2", root=store.root)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"summary.json", "per_task.csv", "advantage_histogram.csv",
                                              "advantage_histogram.png", "value_curves.csv", "value_curves.png"}
    m = read_manifest(store, "raw")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_task"].keys() == m.per_task.keys() and m.per_task
    for task, row in summary["per_task"].items():
        assert row["epsilon"] == pytest.approx(m.per_task[task]["epsilon"])
        assert row["positive_fraction"] == pytest.approx(m.per_task[task]["positive_fraction"])
        assert row["advantage_q05"] <= row["advantage_q50"] <= row["advantage_q95"]
    hist = pd.read_csv(out / "advantage_histogram.csv")
    assert hist.groupby("task")["frames"].sum().to_dict() == {t: s["frames"] for t, s in m.per_task.items()}
    curves = pd.read_csv(out / "value_curves.csv")
    assert curves.drop_duplicates("episode")["success"].value_counts().to_dict() == {True: 2, False: 2}
    assert (out / "value_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_export_is_a_lerobot_dataset_with_the_labels(labeled, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    store, _ = labeled
    out = tmp_path / "export"
    result = run_cli("export", "raw", "--out", str(out), root=store.root)
    assert result.exit_code == 0, result.output
    dataset = LeRobotDataset("recap-data/raw", root=out)
    labels = read_labels(store, "raw")
    assert len(dataset) == len(labels) and dataset.meta.total_episodes == 16  # both shards, merged
    # the label columns come without `observation.`/`action` prefixes: the only prefixed features are the shard's
    assert {"value", "advantage", "nstep_return", "epsilon", "indicator"} <= set(dataset.meta.features)
    prefixed = {k for k in dataset.meta.features if k.startswith(("observation.", "action"))}
    assert prefixed == {k for k in store.manifest("base").features if k.startswith(("observation.", "action"))}
    # frame 0 of the second shard's first episode: labels travel with their frame
    item = dataset[store.manifest("base").frames]
    row = labels[(labels["shard"] == "more") & (labels["index"] == 0)].iloc[0]
    assert int(item["indicator"]) == int(row["indicator"])
    assert float(item["advantage"]) == pytest.approx(row["advantage"], abs=1e-6)
    assert item["value"].dtype == item["advantage"].dtype == torch.float32
    assert item["indicator"].dtype in (torch.int32, torch.int64)  # an int32 column; LeRobot's tensor of it is int64
    again = run_cli("export", "raw", "--out", str(out), root=store.root)
    assert again.exit_code == 2 and "already exists" in again.output


def test_export_columns_are_what_the_lerobot_visualizer_charts(labeled, tmp_path):
    """float32 and int32 of shape (1,) in meta/info.json and in the parquet, equal to the label set's values;
    LeRobot's own `lerobot-edit-dataset info` reads the export offline."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recap_data.labels.export import EXPORTED

    store, _ = labeled
    out = tmp_path / "export"
    assert run_cli("export", "raw", "--out", str(out), root=store.root).exit_code == 0
    charted = {"value", "advantage", "nstep_return", "epsilon", "mc_return", "return_norm", "value_next"}
    assert {c for c, d in EXPORTED.items() if d == "float32"} == charted
    assert {c for c, d in EXPORTED.items() if d == "int32"} == {"indicator", "return_bin"}
    features = json.loads((out / "meta" / "info.json").read_text())["features"]
    for column, dtype in EXPORTED.items():
        assert features[column]["dtype"] == dtype and features[column]["shape"] == [1], (column, features[column])
    table = pa.concat_tables(pq.read_table(p) for p in sorted((out / "data").rglob("*.parquet")))
    kinds = {"float32": pa.float32(), "int32": pa.int32()}
    for column, dtype in EXPORTED.items():
        assert table.schema.field(column).type == kinds[dtype], (column, table.schema.field(column).type)
    # every frame: the export's global index runs over the shards in the label set's order
    exported = table.to_pandas().sort_values("index").reset_index(drop=True)
    order = {s["id"]: i for i, s in enumerate(read_manifest(store, "raw").shards)}
    labels = read_labels(store, "raw")
    labels = labels.assign(o=labels["shard"].map(order).astype(int)).sort_values(["o", "index"])
    assert len(exported) == len(labels) and (exported["index"].to_numpy() == np.arange(len(labels))).all()
    assert (exported["episode_index"].to_numpy() == labels["episode_index"].to_numpy()
            + np.where(labels["o"] > 0, 8, 0)).all()  # 8 episodes in the first shard
    for column, dtype in EXPORTED.items():
        if dtype == "float32":  # the label set's float64, rounded once
            np.testing.assert_array_equal(exported[column].to_numpy(), labels[column].to_numpy().astype(np.float32))
    assert set(np.unique(exported["indicator"])) <= {0, 1}
    np.testing.assert_array_equal(exported["indicator"].to_numpy(), labels["indicator"].to_numpy().astype(np.int32))
    np.testing.assert_array_equal(exported["return_bin"].to_numpy(), labels["return_bin"].to_numpy())
    assert 0 < exported["indicator"].mean() < 1

    proc = subprocess.run([str(Path(PYTHON).parent / "lerobot-edit-dataset"), "--repo_id", "recap-data/raw", "--root",
                           str(out), "--operation.type", "info", "--operation.show_features", "true"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"Total frame(Actual Count): {len(labels)}({len(labels)})" in proc.stdout
    shown = json.loads(proc.stdout.split("Features:\n", 1)[1])
    assert {c: (shown[c]["dtype"], shown[c]["shape"]) for c in EXPORTED} == {c: (d, [1]) for c, d in EXPORTED.items()}


def torchrun_label(store, ckpt, out: str, processes: int, env: dict | None = None, batch_size: int = 5,
                   warm: Path | None = None) -> subprocess.CompletedProcess:
    return torchrun(processes, store.root, "label", "--value-ckpt", str(ckpt), "--shard", "base,more", "--out", out,
                    "--batch-size", str(batch_size), "--decode-workers", "2", env=env, warm=warm)


@pytest.mark.slow
def test_split_inference_gives_the_same_label_set(labeled, warm_cli_bin):
    """torchrun with 2 processes: each scores its run of every shard's batches and writes its own value
    parts; the main one labels them. The label set is one process's, bit for bit."""
    store, ckpt = labeled
    for out, processes in (("single", 1), ("split", 2)):
        proc = torchrun_label(store, ckpt, out, processes, warm=warm_cli_bin)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count(f"wrote label set {out}") == 1
    single, split = read_manifest(store, "single"), read_manifest(store, "split")
    assert split.digest == single.digest and split.per_task == single.per_task  # the tables' bytes
    assert [p["rows"] for p in split.parts] == [p["rows"] for p in single.parts]
    one, two = read_labels(store, "raw"), read_labels(store, "split")
    np.testing.assert_allclose(two["value"], one["value"], atol=1e-6)  # in-process: other torch threads
    assert not list((store.root / "labels").glob(".*"))  # no staging left


@pytest.mark.slow
@pytest.mark.parametrize("dead", [0, 1])
def test_a_process_that_dies_leaves_no_label_set(labeled, warm_cli_bin, dead):
    """Process `dead` of 2 is killed once it has written a part: every process exits non-zero and
    nothing is committed. A killed main process leaves its staging directory, which the next writer
    of that name removes; when the other process dies, the main one may be stopped by torchrun
    before or after it sees the lost peer and cleans up itself (a race), so only the next writer's
    result is checked."""
    store, ckpt = labeled
    lost = f"lost{dead}"  # the fixture's store is shared by both cases
    before = sorted(p.name for p in (store.root / "labels").iterdir())
    proc = torchrun_label(store, ckpt, lost, 2, {FAILPOINT_ENV: f"value_part:{dead}"}, warm=warm_cli_bin)
    assert proc.returncode != 0
    assert not label_set_path(store, lost).exists() and lost not in label_set_names(store)
    assert sorted(p.name for p in (store.root / "labels").iterdir() if not p.name.startswith(".")) == \
        [n for n in before if not n.startswith(".")]
    if dead == 0:
        assert list((store.root / "labels").glob(f".{lost}.tmp.*"))  # SIGKILL: the main process's staging is left
    relabel(store, "raw", lost)
    assert not list((store.root / "labels").glob(f".{lost}.tmp.*")) and lost in label_set_names(store)


def test_cli_label_reads_params_and_checks_reward_against_the_checkpoint(labeled, tmp_path):
    store, ckpt = labeled
    params = tmp_path / "params.yaml"
    params.write_text("advantage:\n  positive_fraction: 0.5\n")  # no reward section: the checkpoint's is used
    ok = run_cli("label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "half", "--params", str(params),
                 root=store.root)
    assert ok.exit_code == 0, ok.output
    assert read_manifest(store, "half").advantage["positive_fraction"] == 0.5
    params.write_text("label:\n  positive_fraction: 0.5\n")  # written before the advantage section
    moved = run_cli("label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "bad", "--params", str(params),
                    root=store.root)
    assert moved.exit_code == 2 and "field 'label.positive_fraction' has moved to section 'advantage'" in moved.output
    moved = run_cli("relabel", "raw", "--out", "bad", "--params", str(params), root=store.root)
    assert moved.exit_code == 2 and "field 'label.positive_fraction' has moved to section 'advantage'" in moved.output
    params.write_text("advantage:\n  positive_fraction: 0.5\nreward:\n  c_fail: 7\n")
    bad = run_cli("label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "bad", "--params", str(params),
                  root=store.root)
    assert bad.exit_code == 2 and "other reward params (c_fail: checkpoint 1000.0, requested 7.0)" in bad.output
    assert not label_set_path(store, "bad").exists()
