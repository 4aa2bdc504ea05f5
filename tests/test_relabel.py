"""Out-of-core relabel (labels/relabel.py) and label tables in parts (format 2, labels/parts.py):
the streamed answer is build_labels' in memory, bit for bit; format 1 is still read; a missing
part, an unknown format and a memory bound are one-line errors with nothing written."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_label_kernels import normalizers_for, random_frames

from recap_data.errors import RecapError
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.label_math.tables import build_labels
from recap_data.labels import parts
from recap_data.labels import relabel as relabel_module
from recap_data.labels.parts import episode_cuts
from recap_data.labels.relabel import relabel, source_advantage
from recap_data.labels.write import LabelConfig, write_label_set
from recap_data.store.db import connect
from recap_data.store.label_sets import LABEL_COLUMNS, label_set_path, read_labels, read_manifest
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import directory_digest


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """make(seed, part_rows) -> (store, frames): a label set `src` of random episodes over 3 shards
    and 4 tasks (ties, 1-3-frame episodes, episodes longer than a part, interventions), written in
    parts of part_rows. The shards are not in the store: their digest check is switched off."""
    monkeypatch.setattr(relabel_module, "check_shards_unchanged", lambda store, manifest: None)

    def make(seed: int, part_rows: int):
        monkeypatch.setattr(parts, "PART_ROWS", part_rows)
        frames = random_frames(np.random.default_rng(seed), n_episodes=30, categorical=seed % 2 == 0)
        reward = RewardConfig(reward_normalizer=2000.0, normalization="global")
        normalizers = normalizers_for(frames, reward)
        labels, per_task = build_labels(frames, reward, AdvantageConfig(n_steps=7), normalizers)
        store = ShardStore(tmp_path / f"data-{seed}-{part_rows}")
        shards = [{"id": s, "digest": "-", "episodes": int(g["episode_index"].nunique()), "frames": len(g)}
                  for s, g in frames.groupby("shard", observed=True)]
        write_label_set(store, "src", labels, per_task, value_checkpoint={"path": "-", "digest": "-"}, shards=shards,
                        reward=reward, advantage=AdvantageConfig(n_steps=7), cfg=LabelConfig(),
                        normalizers=normalizers)
        return store, frames

    return make


def in_memory(store: ShardStore, source: str, cfg: AdvantageConfig):
    """What relabel computed before it streamed: build_labels over every stored value at once."""
    m = read_manifest(store, source)
    reward = RewardConfig(**m.reward)
    columns = ["shard", "episode_index", "frame_index", "index", "task", "success", "is_intervention", "value"]
    frames = read_labels(store, source, columns)[columns]
    return build_labels(frames, reward, cfg, m.return_normalizers)


def assert_same_labels(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == LABEL_COLUMNS and len(got) == len(expected)
    for c in LABEL_COLUMNS:
        a, b = got[c], expected[c]
        if c in ("shard", "task"):
            assert a.astype(str).tolist() == b.astype(str).tolist(), c
        else:
            np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=c)
            assert a.dtype == b.dtype, c


@pytest.mark.parametrize("seed,part_rows,chunk_rows", [(0, 40, 23), (1, 1000, 64), (2, 7, 1 << 20)])
def test_streamed_relabel_is_build_labels_bit_for_bit(synthetic, monkeypatch, seed, part_rows, chunk_rows):
    store, _ = synthetic(seed, part_rows)
    monkeypatch.setattr(parts, "PART_ROWS", chunk_rows)  # batches cut episodes: the carry is exercised
    for name, overrides in (("a", {"positive_fraction": 0.4}), ("b", {"threshold": "global", "n_steps": 3}),
                            ("c", {"positive_fraction": 1e-6, "n_steps": 200}), ("d", {"positive_fraction": 0.999999})):
        m = relabel(store, "src", name, source_advantage(store, "src", overrides))
        cfg = AdvantageConfig(**{**read_manifest(store, "src").advantage, **overrides})
        expected, per_task = in_memory(store, "src", cfg)
        assert_same_labels(read_labels(store, name), expected)
        assert m.per_task == per_task and m.frames == len(expected)
        assert m.positive_fraction == expected["indicator"].mean()
        assert m.digest == directory_digest(label_set_path(store, name) / "tables")
        assert read_manifest(store, name) == m


def test_parts_hold_whole_episodes_in_key_order(synthetic):
    store, frames = synthetic(3, 40)
    m = read_manifest(store, "src")
    assert m.format == "recap-data/label-set@3" and len(m.parts) > 6
    assert sum(p["rows"] for p in m.parts) == len(frames)
    lengths = frames.groupby(["shard", "episode_index"], observed=True).size()
    seen = set()
    for p in m.parts:
        table = pq.read_table(label_set_path(store, "src") / p["path"]).to_pandas()
        assert len(table) == p["rows"] and set(table["shard"].astype(str)) == {p["shard"]}
        episodes = table.groupby("episode_index").size()
        for e, n in episodes.items():  # whole episodes only, each in one part
            assert n == lengths[(p["shard"], e)] and (p["shard"], e) not in seen
            seen.add((p["shard"], e))
        assert p["rows"] <= 40 or len(episodes) == 1  # a longer part is one long episode
    assert len(seen) == len(lengths)


def test_episode_cuts():
    episode = np.repeat([0, 1, 2, 3], [3, 10, 2, 2])
    assert episode_cuts(episode, 5) == [(0, 3), (3, 13), (13, 17)]
    assert episode_cuts(episode, 100) == [(0, 17)]
    assert episode_cuts(episode[:0], 5) == []


def write_format_1(store: ShardStore, name: str, copy: str) -> None:
    """A label set as format 1 wrote it: one table per shard (pandas), no parts in the manifest, the
    advantage's params in the reward's (n_steps) and the label's (as format 2 also kept them)."""
    src = label_set_path(store, name)
    dst = label_set_path(store, copy)
    (dst / "tables").mkdir(parents=True)
    rows = read_labels(store, name)
    for shard, g in rows.groupby("shard", observed=True):
        g.to_parquet(dst / "tables" / f"{shard}.parquet", index=False, row_group_size=50)
    manifest = json.loads((src / "manifest.json").read_text())
    del manifest["parts"]
    advantage = manifest.pop("advantage")
    manifest["reward"]["n_steps"] = advantage["n_steps"]
    manifest["label"].update(positive_fraction=advantage["positive_fraction"], threshold=advantage["threshold"])
    manifest.update(format="recap-data/label-set@1", name=copy)
    (dst / "manifest.json").write_text(json.dumps(manifest))


def test_format_1_is_still_read_and_relabel_rewrites_it(synthetic):
    store, _ = synthetic(4, 50)
    write_format_1(store, "src", "old")
    assert_same_labels(read_labels(store, "old"), read_labels(store, "src"))
    assert read_manifest(store, "old").advantage == read_manifest(store, "src").advantage
    con = connect(store.root, labels="old")
    assert con.execute("SELECT count(*) FROM labels").fetchone()[0] == read_manifest(store, "src").frames
    new, again = relabel(store, "old", "new"), relabel(store, "src", "again")
    assert new.format == "recap-data/label-set@3" and new.per_task == again.per_task
    assert_same_labels(read_labels(store, "new"), read_labels(store, "again"))


def state(store: ShardStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*"))


def test_a_missing_part_an_unknown_format_and_the_memory_bound_are_refused(synthetic):
    store, _ = synthetic(5, 40)
    shutil.copytree(label_set_path(store, "src"), label_set_path(store, "holed"))
    m = read_manifest(store, "holed")
    gone = label_set_path(store, "holed") / m.parts[3]["path"]
    gone.unlink()
    before = state(store)
    for action in (lambda: read_labels(store, "holed"), lambda: connect(store.root, labels="holed"),
                   lambda: relabel(store, "holed", "x")):
        with pytest.raises(RecapError, match=f"{gone}: label table part missing \\({len(m.parts)} parts listed"):
            action()
    with pytest.raises(RecapError, match=r"relabel: needs about [\d,]+ MB .* over --memory-limit-mb 1; raise the "
                                         "limit; nothing was written"):
        relabel(store, "src", "x", memory_limit_mb=1)
    manifest = label_set_path(store, "holed") / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(json.dumps({**json.loads(text), "advantage": {"n_steps": 5}}))
    with pytest.raises(RecapError, match="holed/manifest.json: unreadable label set manifest \\(field 'advantage' "
                                         "must hold n_steps, positive_fraction, threshold\\)"):
        relabel(store, "holed", "x")
    manifest.write_text(text.replace("label-set@3", "label-set@9"))
    with pytest.raises(RecapError, match="field 'format' is 'recap-data/label-set@9', expected "
                                         "'recap-data/label-set@3' \\(or the older 'recap-data/label-set@2' or "
                                         "'recap-data/label-set@1'\\)"):
        relabel(store, "holed", "x")
    assert state(store) == before


def test_a_damaged_chunk_is_named(synthetic):
    """Values the kernels refuse in one part: the reference's error names the frame; nothing written."""
    store, _ = synthetic(6, 40)
    m = read_manifest(store, "src")
    path = label_set_path(store, "src") / m.parts[2]["path"]
    table = pq.read_table(path)
    value = table.column("value").to_numpy().copy()
    value[1] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value", pa.array(value)), path)
    before = state(store)
    with pytest.raises(RecapError, match="has value nan; the value model produced NaN or infinity"):
        relabel(store, "src", "x")
    assert state(store) == before


def write_per_shard(store: ShardStore, frames: pd.DataFrame, checkpoint: str = "-", reward: RewardConfig | None = None,
                    prefix: str = "from-") -> list[str]:
    """One label set per shard of `frames` (as a fleet labels each day's shards on its own), with the
    union's normalizers and value checkpoint `checkpoint`; their names."""
    reward = reward or RewardConfig(reward_normalizer=2000.0, normalization="global")
    normalizers = normalizers_for(frames, reward)
    names = []
    for shard, rows in frames.groupby("shard", observed=True):
        rows = rows.reset_index(drop=True)
        labels, per_task = build_labels(rows, reward, AdvantageConfig(n_steps=7), normalizers)
        shards = [{"id": str(shard), "digest": "-", "episodes": int(rows["episode_index"].nunique()),
                   "frames": len(rows)}]
        write_label_set(store, f"{prefix}{shard}", labels, per_task, shards=shards, reward=reward,
                        value_checkpoint={"path": checkpoint, "digest": checkpoint},
                        advantage=AdvantageConfig(n_steps=7), cfg=LabelConfig(), normalizers=normalizers)
        names.append(f"{prefix}{shard}")
    return names


def test_one_threshold_over_several_sources_is_the_union_s(synthetic):
    """relabel over three per-shard label sets (any order) equals relabel over the one set of their union."""
    store, frames = synthetic(7, 40)
    names = write_per_shard(store, frames)
    cfg = AdvantageConfig(n_steps=5, positive_fraction=0.35)
    union = relabel(store, "src", "union", cfg)
    for order, out in ((names, "three"), (names[::-1], "reversed")):
        m = relabel(store, order, out, cfg)
        assert_same_labels(read_labels(store, out), read_labels(store, "union"))
        assert m.per_task == union.per_task and m.frames == union.frames and m.digest == union.digest
        assert m.positive_fraction == union.positive_fraction and [s["id"] for s in m.shards] == ["a", "b", "c"]
        assert [s["name"] for s in m.parent["sources"]] == order and m.parent["name"] == ", ".join(order)
    assert read_manifest(store, "three").value_checkpoint == {"path": "-", "digest": "-"}


def test_sources_that_do_not_belong_together_are_refused(synthetic):
    store, frames = synthetic(8, 40)
    names = write_per_shard(store, frames)
    other = write_per_shard(store, frames[frames["shard"] == "a"], checkpoint="other-ckpt", prefix="other-")
    harsher = write_per_shard(store, frames[frames["shard"] == "b"], prefix="harsh-",
                              reward=RewardConfig(reward_normalizer=2000.0, normalization="global", c_fail=5.0))
    before = state(store)
    for sources, message in (
            (["src", names[0]], "relabel: shard a is in label sets src and from-a; give each shard's values once"),
            ([names[0], names[0]], "a source is named twice"),
            ([names[1], *other], r"label sets from-b and other-a hold values of different value checkpoints \(- and "
                                 r"other-ckpt\); .* or pass --mixed-checkpoints"),
            ([names[0], *harsher], "label sets from-a and harsh-b define returns differently \\(reward field "
                                   "'c_fail': 1000.0 and 5.0\\)")):
        with pytest.raises(RecapError, match=message):
            relabel(store, sources, "x")
    assert state(store) == before
    m = relabel(store, [names[1], names[2], *other], "mixed", mixed_checkpoints=True)
    assert m.value_checkpoint["digest"] == "mixed" and len(m.value_checkpoint["sources"]) == 3


def test_relabel_command_takes_several_sources_and_a_list_file(synthetic, tmp_path):
    from conftest import run_cli

    store, frames = synthetic(9, 40)
    names = write_per_shard(store, frames)
    listing = tmp_path / "sets.txt"
    listing.write_text(f"# today's label sets\n{names[0]}\n\n{names[1]}  # node 2\n")
    result = run_cli("relabel", f"@{listing}", names[2], "--out", "all", "--positive-fraction", "0.4",
                     root=store.root)
    assert result.exit_code == 0, result.output
    m = read_manifest(store, "all")
    assert [s["name"] for s in m.parent["sources"]] == names and m.advantage["positive_fraction"] == 0.4
    missing = run_cli("relabel", f"@{tmp_path / 'none.txt'}", "--out", "x", root=store.root)
    assert missing.exit_code == 2 and "none.txt: unreadable list of label sets" in missing.output
