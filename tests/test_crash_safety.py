"""SIGKILLed and concurrent writers: the store holds only whole, committed shards."""

import os
import signal
import subprocess
import time

import pytest
from conftest import PYTHON

from recap_data.io import FAILPOINT_ENV, NO_EXCHANGE_ENV, clean_stale
from recap_data.store.db import connect
from recap_data.store.store import ShardStore
from recap_data.store.verify import verify_shard
from recap_data.train.checkpoint import directory_digest

pytestmark = pytest.mark.slow  # processes killed at every failpoint

WRITER = dict(tasks=2, max_steps=20, image_size=32)  # a small shard's options, in this process and on the CLI
WRITER_ARGS = [arg for name, value in WRITER.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def write_here(root, shard_id: str, seed: int = 0, episodes: int = 4) -> None:
    """What `writer` runs, in this process: for the writers a test does not kill."""
    from recap_data.data.demo_data import DemoDataConfig, make_demo_data

    make_demo_data(ShardStore(root), DemoDataConfig(shard_id=shard_id, seed=seed, episodes=episodes, **WRITER),
                   progress=False)


def writer(root, shard_id, failpoint=None, seed=0, episodes: int = 4) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(FAILPOINT_ENV, None)
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    cmd = [PYTHON, "-m", "recap_data.cli.main", "--root", str(root), "make-demo-data", "--shard-id", shard_id,
           "--seed", str(seed), *WRITER_ARGS, "--episodes", str(episodes)]
    # A session of its own, so that a test can also reap the LeRobot encoder processes it forks.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def assert_store_holds_exactly(store: ShardStore, ids: list[str]) -> None:
    assert store.shard_ids() == sorted(ids)
    for shard_id in ids:
        assert verify_shard(store, shard_id) == []
    con = connect(store.root)
    frames = dict(con.execute("SELECT shard, count(*) FROM frames GROUP BY shard").fetchall())
    assert frames == {m.shard_id: m.frames for m in store.manifests()}


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A store with one committed shard, shared by the kill tests (each works on a copy)."""
    root = tmp_path_factory.mktemp("crash") / "data"
    write_here(root, "base")
    return root


@pytest.mark.parametrize("failpoint", ["after_episode:1", "after_episode:3", "after_finalize",
                                       "after_verify", "after_manifest"])
def test_writer_killed_at_any_point_leaves_no_shard(committed, tmp_path, failpoint):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(committed, root)
    store = ShardStore(root)
    digest = store.manifest("base").digest
    proc = writer(root, "victim", failpoint=failpoint)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    assert any(store.tmp_dir.iterdir())  # the dead writer's staging directory is left behind ...
    assert_store_holds_exactly(store, ["base"])  # ... and never read
    assert store.manifest("base").digest == digest
    # The next writer removes the dead one's left-overs and can reuse the id.
    write_here(root, "victim", seed=5)
    assert [p.name for p in store.tmp_dir.iterdir()] == []
    assert_store_holds_exactly(store, ["base", "victim"])


def test_writer_killed_from_outside_while_its_data_streams_to_disk(committed, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(committed, root)
    store = ShardStore(root)
    proc = writer(root, "victim", episodes=40)  # long enough that the kill lands before the commit
    deadline = time.time() + 120
    while not list(store.tmp_dir.glob("victim.*/shard/data/*/*.parquet")) and time.time() < deadline:
        time.sleep(0.05)  # wait until the writer has streamed parquet data to disk
    assert list(store.tmp_dir.glob("victim.*/shard/data/*/*.parquet")), "the writer wrote no parquet data in 120 s"
    assert proc.poll() is None, "the writer finished before it could be killed mid-write"
    proc.send_signal(signal.SIGKILL)  # the writer alone, as the OOM killer would
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert_store_holds_exactly(store, ["base"])
    try:  # its orphaned video-encoder children, which would otherwise outlive the test run
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_three_concurrent_writers_each_land_their_shard(tmp_path):
    root = tmp_path / "data"
    procs = [writer(root, f"w{i}", seed=i) for i in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert_store_holds_exactly(ShardStore(root), ["w0", "w1", "w2"])


def test_concurrent_writers_of_one_id_one_wins_one_fails_cleanly(tmp_path):
    root = tmp_path / "data"
    procs = [writer(root, "same", seed=i) for i in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    errors = "".join(p.stderr.read() for p in procs)
    store = ShardStore(root)
    assert_store_holds_exactly(store, ["same"])
    # Whether the loser saw the winner's shard at start or lost the final rename, it fails cleanly.
    assert codes == [0, 2]
    assert "error: " in errors and "'same'" in errors
    assert [p.name for p in store.tmp_dir.iterdir()] == []


# --force replaces an output by swapping directories; a kill at any step of the swap keeps a whole
# output under the name (or, on the two-rename fallback, one the next cleaner puts back).
SWAP_KILLS = [  # (failpoint, use the two-rename fallback, which output holds the name afterwards)
    ("before_rename", False, "old"), ("after_exchange", False, "new"),
    ("before_rename", True, "old"), ("between_renames", True, "old"), ("after_renames", True, "new")]


def _killed(cmd: list[str], failpoint: str, fallback: bool) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", FAILPOINT_ENV: failpoint}
    env.pop(NO_EXCHANGE_ENV, None)
    if fallback:
        env[NO_EXCHANGE_ENV] = "1"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize(("failpoint", "fallback", "survivor"), SWAP_KILLS)
def test_label_set_replacement_killed_at_every_rename(labeled, tmp_path, failpoint, fallback, survivor):
    import shutil

    from recap_data.labels.relabel import relabel, source_advantage
    from recap_data.store.label_sets import label_set_names, label_set_path, read_manifest

    store = ShardStore(tmp_path / "data")
    shutil.copytree(labeled[0].root, store.root)
    old = directory_digest(label_set_path(store, "raw"))
    _killed([PYTHON, "-m", "recap_data.cli.main", "--root", str(store.root), "relabel", "raw", "--out", "raw",
             "--force", "--positive-fraction", "0.1"], failpoint, fallback)
    if failpoint != "between_renames":  # the exchange, and every other step, never leaves the name empty
        assert label_set_names(store) == ["raw"]
        assert [r[0] for r in connect(store.root).execute("SELECT label_set FROM label_sets").fetchall()] == ["raw"]
    store.clean_stale_tmp()  # what every writer does first; puts an aside copy back
    assert label_set_names(store) == ["raw"]
    assert not [p.name for p in (store.root / "labels").iterdir() if p.name.startswith(".")]
    fraction = read_manifest(store, "raw").advantage["positive_fraction"]
    if survivor == "old":
        assert directory_digest(label_set_path(store, "raw")) == old and fraction == 0.3
    else:
        assert fraction == 0.1 and read_manifest(store, "raw").digest != ""
    relabel(store, "raw", "raw", source_advantage(store, "raw", {"positive_fraction": 0.2}), force=True)  # usable again
    assert read_manifest(store, "raw").advantage["positive_fraction"] == 0.2


@pytest.mark.parametrize(("failpoint", "fallback", "survivor"), SWAP_KILLS)
def test_output_directory_replacement_killed_at_every_rename(tmp_path, failpoint, fallback, survivor):
    """Checkpoints, exports and reports go through the same atomic_directory as label sets."""
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"old" * 1000)
    old = directory_digest(target)
    script = ("import sys; from recap_data.io import atomic_directory\n"
              "with atomic_directory(sys.argv[1], force=True) as tmp:\n"
              "    (tmp / 'model.safetensors').write_bytes(b'new' * 1000)\n")
    _killed([PYTHON, "-c", script, str(target)], failpoint, fallback)
    if failpoint != "between_renames":
        assert target.is_dir()
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (directory_digest(target) == old) == (survivor == "old")
    assert (target / "model.safetensors").read_bytes() == (b"old" if survivor == "old" else b"new") * 1000


def test_the_cleaner_leaves_a_users_own_folders_alone(tmp_path):
    """Beside a checkpoint, only hidden staging names of dead writers are removed."""
    dead = 2**22 + 12345  # above the default pid_max: no such process
    user = [tmp_path / f"results.tmp.{dead}", tmp_path / f"plots.old.{dead}.abcd"]
    staging = [tmp_path / f".ckpt.tmp.{dead}.0a1b2c3d", tmp_path / f".other.tmp.{dead}"]
    for p in user + staging:
        p.mkdir()
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in user)


def test_the_cleaner_leaves_other_hosts_staging_alone(tmp_path):
    """A pid says whether a writer lives only on its own host: a cleaner on a shared file system
    removes its own host's dead writers' staging (and older names without a host), never another
    node's, whose writer may be running."""
    from recap_data.io import HOST, STAGING_RE, staging_suffix

    dead = 2**22 + 12345
    ours = [tmp_path / f".ckpt.tmp.{HOST}@{dead}.0a1b2c3d", tmp_path / f".old-style.tmp.{dead}.0a1b2c3d"]
    theirs = tmp_path / f".ckpt.tmp.{HOST}x@{dead}.0a1b2c3d"  # another node's writer, maybe alive there
    for p in [*ours, theirs]:
        p.mkdir()
    assert sorted(clean_stale(tmp_path)) == sorted(ours)
    assert [p.name for p in tmp_path.iterdir()] == [theirs.name]
    mine = STAGING_RE.match(f".ckpt.tmp.{staging_suffix()}")
    assert (mine["host"], int(mine["pid"])) == (HOST, os.getpid())
