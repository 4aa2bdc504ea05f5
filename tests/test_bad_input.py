"""Bad input, tried the way a new user would: every command's options walked from the click tree,
and damaged files of every kind the project reads. Each must end in one `error:` line naming
what is wrong, exit status 2, no traceback, and a data root left exactly as it was."""

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from recap_data.cli.main import cli
from recap_data.cli.reference import commands
from recap_data.config import Bounded
from recap_data.store.store import ShardStore
from recap_data.train.checkpoint import directory_digest

NUMBERS = ["nan", "inf", "-inf", "-1", "0", "abc"]


def leaf_commands():
    """(command path without `recap-data`, command) for every runnable command."""
    return [(path[1:], command) for path, command in commands(cli) if not isinstance(command, click.Group)]


def filler(command: click.Command, skip: click.Parameter) -> list[str]:
    """Placeholder values for the command's required parameters other than `skip`: they parse, and
    name nothing that exists, so the command can never get as far as writing anything."""
    args, options = [], []
    for p in command.params:
        if p is skip or not p.required:
            continue
        if isinstance(p, click.Argument):
            args += ["nosuch"] * (1 if p.nargs == 1 else 1)
        else:
            options += [p.opts[0], "nosuch"]
    return options + args


def root_state(root: Path) -> tuple:
    """Every name under the root (hidden ones too) and the digest of its content."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")), directory_digest(root)


def run(root: Path, args: list[str]):
    return CliRunner().invoke(cli, ["--root", str(root), *args], catch_exceptions=True)


def assert_clean_error(result, args, naming: str | None = None) -> None:
    where = " ".join(args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (where, result.exception)
    assert result.exit_code == 2, (where, result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (where, result.output)
    if naming:
        assert naming in lines[0], (where, lines[0])


@pytest.fixture(scope="module")
def root(labeled):
    return labeled[0].root


def test_every_numeric_and_choice_option_refuses_bad_values(root):
    before, tried, valid = root_state(root), 0, 0
    for path, command in leaf_commands():
        for p in command.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            flag = p.opts[0]
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                pytest.fail(f"{' '.join(path)} {flag}: a numeric option without a declared Range (use Bounded)")
            if isinstance(p.type, Bounded):
                values = []
                for text in NUMBERS:
                    try:
                        ok = p.type.bounds.problem(p.type.kind(text)) is None
                    except ValueError:
                        ok = False  # not a number of that kind: a wrong type
                    valid += ok
                    if not ok:
                        values.append(text)
            elif isinstance(p.type, click.Choice):
                values = ["nosuch-choice"]
            else:
                continue
            for value in values:
                args = [*path, f"{flag}={value}", *filler(command, p)]
                assert_clean_error(run(root, args), args, naming=flag)
                tried += 1
    assert root_state(root) == before
    assert tried >= 150, tried  # every command's numbers, as the click tree has them
    print(f"\nbad numeric/choice values tried: {tried}, all clean; in-range values skipped: {valid}")


def test_every_path_option_refuses_a_missing_input_a_file_for_a_folder_and_a_folder_for_a_file(root, tmp_path):
    afile, adir, missing = tmp_path / "a-file.json", tmp_path / "a-dir", tmp_path / "missing" / "x"
    afile.write_text("{}")
    adir.mkdir()
    before, tried, outputs = root_state(root), 0, 0
    for path, command in leaf_commands():
        for p in command.params:
            if not isinstance(p.type, click.Path):
                continue
            assert not (p.type.file_okay and p.type.dir_okay), f"{' '.join(path)} {p.name}: say file or folder"
            outputs += not p.type.exists  # a missing output path is where the command writes: valid
            cases = [missing] if p.type.exists else []
            cases.append(afile if not p.type.file_okay else adir)
            for value in cases:
                given = [p.opts[0], str(value)] if isinstance(p, click.Option) else [str(value)]
                args = [*path, *given, *filler(command, p)]
                named = p.opts[0] if isinstance(p, click.Option) else p.human_readable_name
                assert_clean_error(run(root, args), args, naming=named)
                tried += 1
    assert root_state(root) == before
    assert tried >= 30, tried
    print(f"\nbad paths tried: {tried}, all clean; missing output paths skipped: {outputs}")


def test_root_naming_a_file_and_usage_errors_are_one_line(root, tmp_path):
    afile = tmp_path / "f"
    afile.write_text("")
    for args in (["--root", str(afile), "shards", "list"], ["nosuch"], ["report"], ["sql", "select 1", "--format",
                                                                                       "xml"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=True)
        assert_clean_error(result, args)


def test_error_after_a_progress_bar_starts_on_its_own_line(capsys):
    from tqdm import tqdm

    from recap_data.cli.main import fail

    bar = tqdm(total=10, desc="training")
    bar.update(3)
    with pytest.raises(SystemExit) as exit_info:
        fail("value training diverged")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "\nerror: value training diverged\n" in err and err.endswith("error: value training diverged\n")


@pytest.mark.parametrize(("content", "message"), [
    ("3\n", "params must be a mapping of sections"), ("[1, 2]\n", "params must be a mapping of sections"),
    ("reward: {}\nvalue: 3\n", "section 'value' must be a mapping"),
    ("reward: {}\nvalue:\n  lr: .nan\n", "value: field 'lr' = nan is invalid"),
    ("reward: {}\nvalue:\n  lr: .inf\n", "value: field 'lr' = inf is invalid"),
    ("reward: {}\nvalue:\n  steps: -2\n", "value: field 'steps' = -2 is invalid"),
    ("reward: {}\nvalue:\n  steps: ten\n", "must be int"),
    ("reward: {}\nvalue:\n  image_size: 3\n", "value: field 'image_size' = 3 is invalid"),
    ("value: {}\nreward:\n  c_fail: .nan\n", "reward: field 'c_fail' = nan"),
    ("value: {}\nreward:\n  n_steps: 50\n", "field 'reward.n_steps' has moved to section 'advantage'"),
    ("\x00\x01binary", "cannot read params")])
def test_bad_params_files(root, tmp_path, content, message):
    params = tmp_path / "params.yaml"
    params.write_bytes(content.encode())
    before = root_state(root)
    args = ["train", "value", "--shard", "base", "--out", str(tmp_path / "v"), "--params", str(params)]
    assert_clean_error(run(root, args), args, naming=message)
    assert root_state(root) == before and not (tmp_path / "v").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("[]", "not a shard index (a JSON list"),
    ('{"format": "recap-data/shard-index@1", "shards": []}', "non-empty list"),
    ('{"format": "recap-data/shard-index@1", "shards": [{"weight": 1}]}', "shards[0] needs 'id'"),
    ('{"format": "recap-data/shard-index@1", "shards": [3]}', "shards[0] needs 'id'"),
    ("{not json", "unreadable shard index")])
def test_bad_shard_index_files(root, tmp_path, content, message):
    index = tmp_path / "index.json"
    index.write_text(content)
    args = ["train", "value", "--shard", f"@{index}", "--out", str(tmp_path / "v"), "--steps", "1"]
    assert_clean_error(run(root, args), args, naming=message)


def test_damaged_files_are_one_line_errors_and_nothing_is_written(labeled, tmp_path):
    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    ckpt = tmp_path / "value"
    shutil.copytree(labeled[1], ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download or copy
    args = ["label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "new"]
    assert_clean_error(run(store.root, args), args, naming="model.safetensors: unreadable checkpoint")
    args = ["report", "raw", "--out", str(tmp_path / "r"), "--bins", "0"]
    assert_clean_error(run(store.root, args), args, naming="--bins")
    args = ["relabel", "raw", "--out", "n0", "--n-steps", "0"]  # 0 is refused, not taken as "not given"
    assert_clean_error(run(store.root, args), args, naming="--n-steps")

    # A label table and a data parquet file damaged on disk.
    table = next((store.root / "labels" / "raw" / "tables").glob("*/*.parquet"))
    table.write_bytes(b"PAR1 not really")
    before = root_state(store.root)
    for args in (["sql", "SELECT count(*) FROM labels", "--labels", "raw"], ["relabel", "raw", "--out", "again"],
                 ["report", "raw", "--out", str(tmp_path / "r")]):
        assert_clean_error(run(store.root, args), args, naming="unreadable data")
    assert root_state(store.root) == before
    data = next((store.root / "shards" / "more" / "data").glob("*/*.parquet"))
    data.write_bytes(data.read_bytes()[:200])
    before = root_state(store.root)
    for args in (["sql", "SELECT count(*) FROM frames"], ["train", "value", "--shard", "base", "--out",
                                                             str(tmp_path / "v"), "--steps", "1"],
                 ["label", "--value-ckpt", str(labeled[1]), "--shard", "more", "--out", "new"]):
        assert_clean_error(run(store.root, args), args, naming="unreadable data")
    assert root_state(store.root) == before
    assert not (tmp_path / "r").exists() and not (tmp_path / "v").exists()


def read_frames(store: ShardStore, name: str) -> int:
    return json.loads((store.root / "labels" / name / "manifest.json").read_text())["frames"]


def test_a_shard_missing_whole_or_in_part_is_named_with_the_fix(labeled, tmp_path):
    """What a `dvc pull` from a remote that lost a file leaves (DVC checks out nothing of that
    shard), and a shard copied in part: every reader that needs the shard names it and the fix,
    none reads fewer frames in silence; the labels alone, which need no shard, still answer."""
    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    index = tmp_path / "index.json"
    assert run(store.root, ["index", "--add", "base", "--add", "more", "--out", str(index)]).exit_code == 0
    kept = tmp_path / "kept"
    shutil.move(store.shard_path("more"), kept)
    before = root_state(store.root)
    for args in (["sql", "SELECT count(*) FROM labeled_frames", "--labels", "raw"],
                 ["relabel", "raw", "--out", "again"],
                 ["train", "value", "--shard", f"@{index}", "--out", str(tmp_path / "v"), "--steps", "1"],
                 ["report", "raw", "--out", str(tmp_path / "r")]):
        assert_clean_error(run(store.root, args), args, naming="names shard 'more', which is missing")
        assert "`dvc pull`" in run(store.root, args).output
    labels_alone = run(store.root, ["sql", "SELECT count(*) AS n FROM labels", "--labels", "raw", "--format", "csv"])
    assert labels_alone.exit_code == 0 and labels_alone.output.split() == ["n", str(read_frames(store, "raw"))]
    verify = run(store.root, ["shards", "verify"])
    assert verify.exit_code == 2 and "more: MISSING" in verify.output and "`dvc pull`" in verify.output
    assert root_state(store.root) == before and not (tmp_path / "v").exists() and not (tmp_path / "r").exists()

    shutil.move(kept, store.shard_path("more"))
    video = next(store.shard_path("more").glob("videos/*/*/*.mp4"))
    video.unlink()
    before = root_state(store.root)
    for args in (["sql", "SELECT count(*) FROM frames"], ["train", "value", "--shard", "more", "--out",
                                                             str(tmp_path / "v"), "--steps", "1"]):
        assert_clean_error(run(store.root, args), args, naming=f"{video}: shard 'more' is incomplete")
    assert root_state(store.root) == before


def test_report_refuses_a_label_set_whose_shard_changed(labeled, tmp_path):
    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    manifest = store.shard_path("more") / "manifest.json"
    data = json.loads(manifest.read_text())
    data["digest"] = "sha256:" + "0" * 64
    manifest.write_text(json.dumps(data))
    args = ["report", "raw", "--out", str(tmp_path / "r")]
    assert_clean_error(run(store.root, args), args, naming="shard more changed")
    assert not (tmp_path / "r").exists()


def test_import_refuses_nan_in_a_numeric_feature(make_lerobot_dataset, store):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = make_lerobot_dataset("nan")
    path = next((src / "data").glob("*/*.parquet"))
    table = pq.read_table(path)
    state = table.column("observation.state").to_pylist()
    state[9][2] = float("nan")  # episode 1, frame 4
    i = table.schema.get_field_index("observation.state")
    table = table.set_column(i, table.schema.field(i), pa.array(state, type=table.schema.field(i).type))
    pq.write_table(table, path)
    args = ["shards", "import", str(src), "--id", "bad", "--all-success"]
    assert_clean_error(run(store.root, args), args, naming="'observation.state' has 1 frame(s) with NaN")
    assert "episode 1, frame 4" in run(store.root, args).output
    assert store.shard_ids() == []


@pytest.mark.parametrize("content", ["[]", "{not json", '{"format": "recap-data/shard-manifest@1"}', "3"])
def test_damaged_manifests_and_checkpoint_configs(labeled, tmp_path, content):
    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    (store.shard_path("more") / "manifest.json").write_text(content)
    for args in (["shards", "list"], ["sql", "SELECT count(*) FROM shards"]):
        assert_clean_error(run(store.root, args), args, naming="more/manifest.json")
    ckpt = tmp_path / "value"
    shutil.copytree(labeled[1], ckpt)
    (ckpt / "config.json").write_text(content)
    args = ["label", "--value-ckpt", str(ckpt), "--shard", "base", "--out", "new"]
    assert_clean_error(run(store.root, args), args, naming="config.json")


def test_frames_are_read_without_label_set_manifests(labeled, tmp_path):
    """A torn label set breaks what reads it, not training on shards (db.connect reads label
    sets only when asked)."""
    from recap_data.data.frames import load_frames
    from recap_data.store.db import connect

    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    (store.root / "labels" / "raw" / "manifest.json").write_text("{torn")
    assert len(load_frames(store, ["base"])) == store.manifest("base").frames
    assert connect(store.root, label_sets=False).execute("SELECT count(*) FROM frames").fetchone()[0] > 0
    args = ["sql", "SELECT count(*) FROM label_sets"]
    assert_clean_error(run(store.root, args), args, naming="raw/manifest.json")


def test_unknown_baseline_names_are_one_line_errors(root, tmp_path):
    before = root_state(root)
    args = ["train", "policy", "--shard", "base", "--baseline", "bc", "--out", str(tmp_path / "p"), "--steps", "1"]
    assert_clean_error(run(root, args), args, naming="option --baseline: 'bc' is not 'filtered_bc'")
    params = tmp_path / "params.yaml"
    params.write_text("iterations: {}\nbaselines: [bc]\n")
    args = ["summary", "--params", str(params), "--metrics-dir", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    assert_clean_error(run(root, args), args, naming="field 'baselines' = ['bc'] is invalid: use a list of filtered_bc")
    assert root_state(root) == before and not (tmp_path / "p").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("family,weights", [("pi0", "lerobot/pi0_base"), ("pi05", "lerobot/pi05_base")])
def test_real_policy_without_local_weights_names_the_download(root, tmp_path, family, weights):
    before = root_state(root)
    args = ["train", "policy", "--shard", "base", "--indicator-mode", "on", "--type", family, "--size", "real",
            "--pretrained-path", str(tmp_path / "nothing"), "--out", str(tmp_path / "p"), "--steps", "1"]
    assert_clean_error(run(root, args), args, naming=f"field 'pretrained_path' = '{tmp_path / 'nothing'}'")
    assert f"hf download {weights}" in run(root, args).output
    params = tmp_path / "params.yaml"
    params.write_text("policy:\n  type: pi1\n")
    args = ["train", "policy", "--shard", "base", "--params", str(params), "--out", str(tmp_path / "p")]
    assert_clean_error(run(root, args), args, naming="field 'type' = 'pi1' is invalid")
    assert root_state(root) == before and not (tmp_path / "p").exists()
