"""The DVC pipeline: its DAG, the whole RECAP loop end to end on small params in a git repository,
and the run shared as a team shares it (a DVC remote, a clone, `dvc pull`)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recap_data.store.shard_index import read_index
from recap_data.store.store import ShardStore, file_sha256
from recap_data.train.checkpoint import directory_digest

pytestmark = pytest.mark.slow  # dvc repro in a clone: minutes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
ITERATION_STAGES = ("rollout", "index", "value", "values", "labels", "policy", "eval")
SMALL = {  # the whole loop in a few minutes on 2 cores
    "base": {"episodes": 8, "tasks": 2, "image_size": 32, "max_steps": 24},
    "value": {"steps": 20, "batch_size": 8},
    "policy": {"steps": 10, "batch_size": 4},
    "rollout": {"episodes": 2, "workers": 1, "max_steps": 24},
    "eval": {"episodes": 6, "max_steps": 24},
    "baselines": ["filtered_bc"],  # the baseline switch on: filtered BC trained and evaluated beside RECAP
}


TERMINAL = 120  # columns: what `dvc metrics diff` (a row per metric) must fit in
WIDE_TERMINAL = 200  # `dvc metrics show` (a column per key): with throughput beside success it cannot fit 120
HEADLINE = {  # the keys of each kind of metrics file: the same for every iteration and any number of tasks
    "eval.json": {"success_rate", "ci_low", "ci_high", "success_steps", "throughput", "throughput_low",
                  "throughput_high"}, "rollout.json": {"success_rate"},
    "value.json": {"mae", "constant_mae", "loss"}, "labels.json": {"positive_fraction"},
    "policy.json": {"loss", "positive_fraction"},
}


def expected_metrics(cwd: Path) -> dict[str, set[str]]:
    """Every metrics file the pipeline declares, with its headline keys."""
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    iterations, arms = params["iterations"], params["baselines"]
    names = {"sft": ("eval.json", "policy.json"), "value_pre": ("value.json",),
             **{k: ("rollout.json", "value.json", "labels.json", "policy.json", "eval.json") for k in iterations},
             **{f"{k}/{arm}": ("policy.json", "eval.json") for k in iterations for arm in arms}}
    return {f"metrics/{name}/{file}": HEADLINE[file] for name, files in names.items() for file in files}


@pytest.fixture(scope="module", autouse=True)
def warm_recap_data(warm_cli_bin):
    """Every `recap-data` this module's commands start, DVC's stages included, is forked from one
    warm server (tests/warm_cli.py): the real CLI in a process of its own, without ~6 s of imports."""
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{warm_cli_bin}:{BIN}:{path}"
    try:
        yield
    finally:
        os.environ["PATH"] = path


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert proc.returncode == 0 or not check, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def shown_metrics(cwd: Path) -> dict[str, dict]:
    """`dvc metrics show`: every metrics file the pipeline declares, loaded, with its headline keys."""
    shown = json.loads(run([DVC, "metrics", "show", "--json"], cwd).stdout)
    files = {path: f["data"] for path, f in next(iter(shown.values()))["data"].items()}
    assert {path: set(data) for path, data in files.items()} == expected_metrics(cwd)
    return files


def shown_plots(cwd: Path, out: Path, *command: str) -> str:
    """`dvc plots show` (or `diff REV`) into `out`, with nothing that fails to load; the page's HTML."""
    proc = run([DVC, "plots", *(command or ["show"]), "--out", str(out)], cwd)
    assert "failed to load" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    return (out / "index.html").read_text()


def output_files(cwd: Path) -> dict[str, str]:
    """sha256 of every file the pipeline's stages wrote, by path relative to the project."""
    return {p.relative_to(cwd).as_posix(): file_sha256(p) for top in ("data", "models", "metrics", "plots", "reports")
            for p in sorted((cwd / top).rglob("*")) if p.is_file() and p.name != ".gitignore"}


def cache_object(remote: Path, md5: str) -> Path:
    """A DVC 3 remote's file for an object hash (a directory's listing ends in .dir)."""
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def query(cwd: Path, sql: str, labels: str) -> list[dict]:
    out = run(["recap-data", "--root", "data", "sql", sql, "--labels", labels, "--format", "json"], cwd)
    return json.loads(out.stdout)


def project_copy(tmp: Path, overrides: dict | None = None) -> Path:
    """dvc.yaml, params.yaml (with overrides), the DVC config, the project's .gitignore and the package
    sources (stage deps; the commands run the installed package) in a fresh git repository."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "recap_data", tmp / "recap_data", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", tmp / ".dvc" / "config")
    shutil.copy(ROOT / ".dvc" / ".gitignore", tmp / ".dvc" / ".gitignore")
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    for section, values in (overrides or {}).items():
        params[section] = {**params[section], **values} if isinstance(values, dict) else values
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], tmp)
    return tmp


def stages_to_run(cwd: Path) -> list[str]:
    out = run([DVC, "repro", "--dry"], cwd).stdout
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def dag(cwd: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """(stages, edges upstream -> downstream) from `dvc dag --dot`."""
    import re

    dot = run([DVC, "dag", "--dot"], cwd).stdout
    edges = {(a, b) for a, b in re.findall(r'"([^"]+)" -> "([^"]+)"', dot)}
    return set(re.findall(r'^"([^"]+)";$', dot, re.M)), edges


@pytest.mark.parametrize("baselines", [[], ["filtered_bc"]])
def test_dag_has_the_recap_stages_and_their_chain(tmp_path, baselines):
    cwd = project_copy(tmp_path, {"baselines": baselines})
    iterations = yaml.safe_load((cwd / "params.yaml").read_text())["iterations"]
    stages, edges = dag(cwd)
    per_iteration = {f"{s}@{k}" for s in ITERATION_STAGES for k in iterations}
    arms = {f"{s}@{k}-{arm}" for s in ("baseline", "eval_baseline") for k in iterations for arm in baselines}
    assert stages == {"base", "sft", "value_pre", "eval_sft", "summary"} | per_iteration | arms
    for key in iterations:  # a baseline arm: iteration k's data, from the SFT policy, evaluated, summarised
        for arm in baselines:
            chain = [f"index@{key}", f"baseline@{key}-{arm}", f"eval_baseline@{key}-{arm}", "summary"]
            assert set(zip(chain, chain[1:], strict=False)) | {("sft", f"baseline@{key}-{arm}")} <= edges
    assert {("sft", "eval_sft"), ("eval_sft", "summary")} <= edges
    for key, spec in iterations.items():
        prev_policy = "sft" if spec["prev"] == "sft" else f"policy@{spec['prev']}"
        chain = [prev_policy, f"rollout@{key}", f"index@{key}", f"value@{key}", f"values@{key}", f"labels@{key}",
                 f"policy@{key}", f"eval@{key}", "summary"]
        assert set(zip(chain, chain[1:], strict=False)) <= edges, chain
        assert {("value_pre", f"value@{key}"), ("sft", f"policy@{key}")} <= edges
        assert (f"index@{spec['prev']}", f"index@{key}") in edges or spec["prev"] == "sft"
        # labeling reads the stored values only: the value model is upstream of inference alone
        assert (f"value@{key}", f"labels@{key}") not in edges


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> Path:
    """The whole loop on SMALL params, run once (`dvc repro`) and committed as a team would:
    `git add -A` takes what the project's .gitignore lets in (code, params, dvc.lock, metrics,
    plots, the report plots), DVC's cache holds the rest."""
    cwd = project_copy(tmp_path_factory.mktemp("run"), SMALL)
    run([DVC, "repro"], cwd, timeout=1200)
    run(["git", "add", "-A"], cwd)
    run(["git", "commit", "-qm", "baseline"], cwd)
    return cwd


def test_the_whole_loop_end_to_end_with_lineage(pipeline_run, tmp_path):
    cwd = pipeline_run
    store = ShardStore(cwd / "data")
    assert store.shard_ids() == ["base", "iter1", "iter2"]
    assert [e["id"] for e in read_index(cwd / "data/index/iter2.json", store)] == ["base", "iter1", "iter2"]

    # Lineage, from the last policy back to the data: every link is a recorded digest.
    policy = json.loads((cwd / "models/policy-iter2/provenance.json").read_text())
    labels = json.loads((cwd / "data/labels/iter2/manifest.json").read_text())
    values = json.loads((cwd / "data/labels/iter2-values/manifest.json").read_text())
    assert policy["label_set"]["digest"] == labels["digest"] and policy["indicator_mode"] == "use"
    assert policy["init"]["digest"] == directory_digest(cwd / "models/policy-sft")
    assert labels["parent"]["name"] == "iter2-values" and labels["parent"]["digest"] == values["digest"]
    assert values["value_checkpoint"]["digest"] == directory_digest(cwd / "models/value-iter2")
    value = json.loads((cwd / "models/value-iter2/provenance.json").read_text())
    assert value["init"]["digest"] == directory_digest(cwd / "models/value-pre")
    assert [s["id"] for s in value["shards"]] == ["base", "iter1", "iter2"]
    rollout = store.manifest("iter2").source
    assert rollout["policy"]["digest"] == directory_digest(cwd / "models/policy-iter1")
    assert store.manifest("iter1").source["policy"]["path"] == "models/policy-sft"
    assert {s["id"]: s["digest"] for s in labels["shards"]} == {s: store.manifest(s).digest for s in
                                                                ("base", "iter1", "iter2")}

    # Metrics and plots read back through DVC.
    files = shown_metrics(cwd)
    assert store.manifest("iter2").episodes == 2 and store.manifest("iter2").source["env"] == "embedded"
    for name in ("sft", "iter1", "iter2"):  # every policy on the same held-out episodes
        ev = json.loads((cwd / f"metrics/{name}/eval_record.json").read_text())
        assert ev["episodes"] == 6 and ev["success_ci95"] == [files[f"metrics/{name}/eval.json"][k]
                                                              for k in ("ci_low", "ci_high")]
        assert ev["init_states"] == [100, 199] and ev["seeds"][0] >= 10**9
    assert abs(files["metrics/iter1/labels.json"]["positive_fraction"] - 0.3) < 0.02
    assert files["metrics/iter1/value.json"]["mae"] > 0
    # `dvc metrics show` fits a wide terminal: one row per file, one column per key of all files together
    table = run([DVC, "metrics", "show"], cwd).stdout.splitlines()
    assert len(table) == 1 + len(files) and max(map(len, table)) <= WIDE_TERMINAL, "\n".join(table)
    with open(cwd / "plots/success_rate.csv") as f:
        summary = list(csv.DictReader(f))
    assert [row["name"] for row in summary] == ["sft", "iter1", "iter2"]
    for row in summary:  # RECAP's and the baseline's columns are their eval.json's; both start at SFT's
        arm = "sft" if row["name"] == "sft" else f"{row['name']}/filtered_bc"
        for key in ("success_rate", "ci_low", "ci_high", "throughput", "throughput_low", "throughput_high"):
            assert float(row[key]) == files[f"metrics/{row['name']}/eval.json"][key]
            assert float(row[f"filtered_bc_{key}"]) == files[f"metrics/{arm}/eval.json"][key]
    for key in ("iter1", "iter2"):  # the baseline trained on the iteration's data, from the SFT policy
        provenance = json.loads((cwd / f"models/filtered_bc-{key}/provenance.json").read_text())
        assert provenance["baseline"] == "filtered_bc" and provenance["successes_only"]
        assert provenance["indicator_mode"] == "on" and provenance["label_set"] is None
        assert provenance["init"]["digest"] == directory_digest(cwd / "models/policy-sft")
        assert [s["id"] for s in provenance["shards"]] == [e["id"] for e in read_index(cwd / f"data/index/{key}.json")]
    html = shown_plots(cwd, tmp_path / "html")
    assert "success_by_iteration" in html and "throughput_by_iteration" in html and "success_rate.png" in html
    assert "filtered_bc_success_rate" in html and "filtered_bc_throughput" in html
    assert "advantage_histogram" in html and "value_curves" in html
    # each iteration's label report as a page with its episode videos, beside (not among) the plots
    for key in ("iter1", "iter2"):
        mp4s = sorted((cwd / f"reports/{key}-html/videos").glob("*.mp4"))
        page = (cwd / f"reports/{key}-html/report.html").read_text()
        assert 1 <= len(mp4s) <= 3 and page.count("data:video/mp4;base64,") == len(mp4s)
        assert json.loads((cwd / f"data/labels/{key}/manifest.json").read_text())["digest"] in page
        assert "pi0 <code>models/policy-sft</code>" in page  # the shard table names who recorded iter1
        assert not (cwd / f"reports/{key}/report.html").exists()
    assert "Data and pipelines are up to date" in run([DVC, "status"], cwd).stdout
    # Every output is versioned: what Git does not hold, DVC's cache does (docs/pipeline.md)
    assert run(["git", "status", "--porcelain"], cwd).stdout == ""
    in_git = set(run(["git", "ls-files"], cwd).stdout.split())
    cached = {o["path"] for stage in yaml.safe_load((cwd / "dvc.lock").read_text())["stages"].values()
              for o in stage.get("outs", []) if o.get("md5")}
    for rel in output_files(cwd):
        assert rel in in_git or any(rel == o or rel.startswith(o + "/") for o in cached), rel
    assert {"metrics/iter1/eval.json", "plots/success_rate.csv", "reports/iter1/per_task.csv"} <= in_git
    assert {"reports/iter1-html", "data/shards/iter1", "models/policy-iter2"} <= cached


def test_a_run_shared_through_a_remote_pulls_whole_and_runs_nothing(pipeline_run, tmp_path):
    """The team flow (docs/pipeline.md): commit, `dvc push`; a colleague clones and `dvc pull`s."""
    cwd, remote = pipeline_run, tmp_path / "remote"
    run([DVC, "remote", "add", "-f", "-d", "team", str(remote)], cwd)
    run(["git", "commit", "-qam", "the team's remote"], cwd)
    run([DVC, "push"], cwd)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(cwd), str(clone)], tmp_path)
    run([DVC, "pull"], clone)
    assert "Data and pipelines are up to date" in run([DVC, "status"], clone).stdout
    assert stages_to_run(clone) == []
    assert shown_metrics(clone) == shown_metrics(cwd)
    shown_plots(clone, tmp_path / "html")
    assert output_files(clone) == output_files(cwd)  # byte for byte, whether from Git or the cache
    verified = run(["recap-data", "--root", "data", "shards", "verify"], clone).stdout
    assert verified.split() == ["base:", "ok", "iter1:", "ok", "iter2:", "ok"]
    counts = "SELECT (SELECT count(*) FROM frames) frames, count(*) labels, sum(indicator::INT) positive FROM labels"
    assert query(clone, counts, "iter2") == query(cwd, counts, "iter2")

    # A remote that lost one file of a shard: DVC checks out nothing of that directory, and
    # every reader names the missing shard with the fix instead of reading fewer frames.
    lossy = tmp_path / "lossy-remote"
    shutil.copytree(remote, lossy)
    lock = yaml.safe_load((cwd / "dvc.lock").read_text())
    shard = next(o for o in lock["stages"]["rollout@iter1"]["outs"] if o["path"] == "data/shards/iter1")
    listing = json.loads(cache_object(lossy, shard["md5"]).read_text())
    cache_object(lossy, next(f["md5"] for f in listing if f["relpath"].startswith("data/"))).unlink()
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(cwd), str(second)], tmp_path)
    run([DVC, "remote", "modify", "--local", "team", "url", str(lossy)], second)
    assert run([DVC, "pull"], second, check=False).returncode != 0
    run([DVC, "checkout"], second, check=False)  # what did come: everything else
    assert (second / "data/shards/iter2").is_dir() and not (second / "data/shards/iter1").exists()
    fix = "`dvc pull`"
    for cmd in (["shards", "verify"], ["sql", "SELECT count(*) FROM labeled_frames", "--labels", "iter2"],
                ["train", "value", "--shard", "@data/index/iter2.json", "--out", str(tmp_path / "v"), "--steps", "1"],
                ["relabel", "iter1-values", "--out", "again"]):
        proc = run(["recap-data", "--root", "data", *cmd], second, check=False)
        error = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and error.startswith("error:") and "iter1" in error and fix in error, proc.stderr
    assert not (second / "data/labels/again").exists() and not (tmp_path / "v").exists()


def test_advantage_params_change_labeling_only_and_compare_across_commits(pipeline_run, tmp_path):
    cwd = pipeline_run
    assert run(["git", "status", "--porcelain"], cwd).stdout == ""
    # Only labeling and what follows it depends on the advantage's params: never the value model.
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["advantage"]["positive_fraction"] = 0.4
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = stages_to_run(cwd)
    assert {"labels@iter1", "labels@iter2"} <= set(dry)
    assert not {s for s in dry if s.split("@")[0] in ("values", "value", "value_pre", "rollout", "base", "sft")}
    run(["git", "checkout", "params.yaml"], cwd)

    # An experiment on the advantage's params, in the project's git repository.
    before = directory_digest(cwd / "models/value-iter1")
    out = run([DVC, "exp", "run", "-S", "advantage.positive_fraction=0.5"], cwd, timeout=1200).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert {"labels@iter1", "policy@iter1"} <= ran and not ran & {"value_pre", "value@iter1", "values@iter1"}
    assert directory_digest(cwd / "models/value-iter1") == before
    # `dvc exp show`: the baseline and the experiment side by side, with the headline metrics
    shown = json.loads(run([DVC, "exp", "show", "--json"], cwd).stdout)
    baseline = next(row for row in shown if row["rev"] != "workspace")
    rows = {"baseline": baseline["data"], "exp": baseline["experiments"][0]["revs"][0]["data"]}
    for name, target in (("baseline", 0.3), ("exp", 0.5)):
        metrics = {path: m["data"] for path, m in rows[name]["metrics"].items()}
        assert rows[name]["params"]["params.yaml"]["data"]["advantage"]["positive_fraction"] == target
        assert abs(metrics["metrics/iter1/labels.json"]["positive_fraction"] - target) < 0.02
        assert {"success_rate", "ci_low", "ci_high"} <= set(metrics["metrics/iter2/eval.json"])
        assert metrics["metrics/iter2/value.json"]["mae"] > 0

    # Committed, the change is a `dvc metrics diff` and a `dvc plots diff` against HEAD~1.
    run(["git", "add", "-A"], cwd)
    run(["git", "commit", "-qm", "advantage.positive_fraction 0.5"], cwd)
    changed = json.loads(run([DVC, "metrics", "diff", "HEAD~1", "--json"], cwd).stdout)
    for key in ("iter1", "iter2"):
        label = changed[f"metrics/{key}/labels.json"]["positive_fraction"]
        assert abs(label["old"] - 0.3) < 0.02 and abs(label["new"] - 0.5) < 0.02
    diff = json.loads(run([DVC, "metrics", "diff", "HEAD~1", "--all", "--json"], cwd).stdout)
    assert {path: set(d) for path, d in diff.items()} == expected_metrics(cwd)
    assert all("diff" in d for file in diff.values() for d in file.values())
    table = run([DVC, "metrics", "diff", "HEAD~1", "--all"], cwd).stdout.splitlines()
    assert max(map(len, table)) <= TERMINAL, "\n".join(table)
    html = shown_plots(cwd, tmp_path / "diff", "diff", "HEAD~1")
    assert "HEAD~1" in html and "workspace" in html and "success_by_iteration" in html


@pytest.mark.parametrize("preset", sorted((ROOT / "pipelines").glob("params-*.yaml")))
def test_presets_name_only_known_fields(preset):
    """Every section of a preset builds its stage config (no typo'd or stale field)."""
    from recap_data.cli.stages import STAGES
    from recap_data.config import load_config

    for cls in {cls for classes in STAGES.values() for cls in classes}:
        load_config(cls, preset)
    iterations = yaml.safe_load(preset.read_text())["iterations"]
    names = ["sft", *iterations]
    assert all(spec["prev"] in names[:i + 1] for i, spec in enumerate(iterations.values()))
