"""The label-set verbs of `recap-data`: label, relabel, report, export, view (registered in cli.py)."""

from pathlib import Path

import click

from recap_data.cli.stages import load_stage, params_option, stage_options
from recap_data.config import (
    Bounded,
    InputDir,
    OutputDir,
    OutputFile,
    Range,
    read_section,
    refuse_moved,
)
from recap_data.errors import RecapError, one_line_errors
from recap_data.label_math.config import AdvantageConfig, RewardConfig
from recap_data.labels.write import LabelConfig
from recap_data.store import paths
from recap_data.store.store import ShardStore


@click.command("label")
@click.option("--value-ckpt", type=InputDir, required=True, help="Value checkpoint to score frames.")
@click.option("--shard", "shards", multiple=True, required=True, help="Shard to label (repeat or comma-separate).")
@click.option("--out", "name", required=True, help="Name of the new label set (under <root>/labels/).")
@params_option("label")
@click.option("--metrics", type=OutputFile,
              help="Write the realised positive fraction as JSON here (each task's is in the report).")
@click.option("--force", is_flag=True, help="Replace an existing label set of that name (atomically).")
@stage_options("label")
@click.pass_obj
def label_cmd(store: ShardStore, value_ckpt: Path, shards, name: str, params: Path | None, metrics: Path | None,
              force: bool, **options):
    """Run the value model over every frame and write a label set (return, value, advantage, indicator)."""
    from recap_data.data.shard_specs import shard_ids
    from recap_data.labels.infer import label
    from recap_data.value.model import checkpoint_reward

    # the reward defaults to the checkpoint's; one given in params or options must match it
    cfg, advantage, reward = load_stage("label", params, options, required=False,
                                        defaults={RewardConfig: checkpoint_reward(value_ckpt).to_dict()})
    m = label(store, shard_ids(shards, store), value_ckpt, name, reward, cfg, advantage, force=force)
    if m is not None:
        _label_metrics(m, metrics)
        click.echo(_label_summary(m))


def _label_metrics(m, path: Path | None) -> None:
    """A label set's headline for `dvc metrics show`: the realised positive fraction, one key whatever the
    tasks (each task's epsilon and fraction are in its manifest and `recap-data report`'s per_task.csv)."""
    if path is None:
        return
    from recap_data.io import write_json

    write_json(path, {"positive_fraction": round(m.positive_fraction, 4)})


@click.command("relabel")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "name", required=True, help="Name of the new label set.")
@params_option("relabel", "default: the source's advantage params")
@click.option("--metrics", type=OutputFile,
              help="Write the realised positive fraction as JSON here (each task's is in the report).")
@click.option("--force", is_flag=True, help="Replace an existing label set of that name (atomically).")
@click.option("--memory-limit-mb", type=Bounded(int, Range(1)), default=4096, show_default=True,
              help="Refuse, before writing anything, a relabel whose estimated peak memory is larger.")
@click.option("--mixed-checkpoints", is_flag=True,
              help="Allow sources whose values come from different value checkpoints (refused by default: their "
                   "advantages are not comparable).")
@stage_options("relabel")
@click.pass_obj
def relabel_cmd(store: ShardStore, sources: tuple[str, ...], name: str, params: Path | None, metrics: Path | None,
                force: bool, memory_limit_mb: int, mixed_checkpoints: bool, **options):
    """Write a new label set from the stored values of SOURCES (label sets, or @FILE listing one per line)
    with other advantage params; no model run. Several sources get one threshold per task over all their frames."""
    from recap_data.labels.relabel import relabel
    from recap_data.store.label_sets import read_manifest

    sources = source_names(sources)
    for cls in (LabelConfig, RewardConfig):  # where a params file written before the advantage section kept it
        refuse_moved(cls.section, read_section(params, cls.section, required=False),
                     str(params) if params else "command line")
    (advantage,) = load_stage("relabel", params, options, required=False,
                              defaults={AdvantageConfig: read_manifest(store, sources[0]).advantage})
    m = relabel(store, sources, name, advantage, force=force, memory_limit_mb=memory_limit_mb, progress=True,
                mixed_checkpoints=mixed_checkpoints)
    _label_metrics(m, metrics)
    click.echo(_label_summary(m))


def source_names(args: tuple[str, ...]) -> list[str]:
    """Label-set names, each given as is or read from @FILE (one per line; blank lines and # comments skipped)."""
    names = []
    for arg in args:
        if not arg.startswith("@"):
            names.append(arg)
            continue
        with one_line_errors(arg[1:], "unreadable list of label sets", "give a text file of label-set names, one "
                             "per line", OSError, UnicodeDecodeError):
            lines = Path(arg[1:]).read_text().splitlines()
        names += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    if not names:
        raise RecapError(f"relabel: {' '.join(args)} names no label set; give at least one")
    return names


@click.command("report")
@click.argument("labels")
@click.option("--out", type=OutputDir,
              help="Directory for the report (default: reports/LABELS).")
@click.option("--bins", type=Bounded(int, Range(1, 1000)), default=40, show_default=True,
              help="Advantage histogram bins.")
@click.option("--episodes", type=Bounded(int, Range(0, 1000)), default=3, show_default=True,
              help="Successful and failed episodes each in the value curves.")
@click.option("--html", is_flag=True,
              help="Also write report.html: tables, plots, episode videos and lineage on one self-contained page.")
@click.option("--html-dir", type=OutputDir,
              help="Write report.html and its videos/ here instead of into --out (implies --html); the pipeline "
                   "does, as DVC reads --out as plots.")
@click.option("--videos", type=Bounded(int, Range(0, 100)),
              help="With --html: embed the videos of the N best, N worst and N most-wrong episodes [default: 1].")
@click.option("--force", is_flag=True, help="Replace an existing report at --out (and --html-dir), atomically.")
@click.pass_obj
def report_cmd(store: ShardStore, labels: str, out: Path | None, bins: int, episodes: int, html: bool,
               html_dir: Path | None, videos: int | None, force: bool):
    """Per-task epsilon, positive fraction, advantage quantiles and start values; histograms and value curves."""
    from recap_data.reports.report import report

    out = out or Path(paths.REPORTS_DIR) / labels
    html = html or html_dir is not None
    result = report(store, labels, out, bins=bins, episodes_per_outcome=episodes, html=html, html_dir=html_dir,
                    videos=(1 if html else 0) if videos is None else videos, force=force, progress=True)
    click.echo(f"{'task':60s} {'epsilon':>9s} {'positive':>9s} {'V0 succ':>8s} {'V0 fail':>8s}")
    for task, r in result["per_task"].items():
        v0s, v0f = (f"{v:8.3f}" if v is not None else f"{'-':>8s}" for v in
                    (r["start_value_success"], r["start_value_failure"]))
        click.echo(f"{task[:60]:60s} {r['epsilon']:9.4f} {r['positive_fraction']:9.3f} {v0s} {v0f}")
    page = f", report.html ({len(result['videos'])} episode videos)" if html and html_dir is None else ""
    click.echo(f"wrote report {out}: summary.json, per_task.csv, advantage_histogram.csv/.png, value_curves.csv/.png"
               f"{page}")
    if html_dir is not None:
        click.echo(f"wrote {html_dir}/report.html ({len(result['videos'])} episode videos)")


@click.command("export")
@click.argument("labels")
@click.option("--out", type=OutputDir, required=True,
              help="Directory of the LeRobot v3 dataset to write.")
@click.option("--force", is_flag=True, help="Replace an existing directory at --out (atomically).")
@click.pass_obj
def export_cmd(store: ShardStore, labels: str, out: Path, force: bool):
    """Write the label set's shards as one LeRobot v3 dataset with the label columns added."""
    from recap_data.labels.export import export

    export(store, labels, out, force=force)
    click.echo(f"wrote LeRobot dataset {out} (label set {labels}); load it with LeRobotDataset(repo_id, root='{out}')")


@click.command("view")
@click.argument("labels")
@click.option("--out", type=OutputDir, help="Directory for the videos and contact sheets (default: "
              "reports/LABELS-episodes, beside the report).")
@click.option("--episode", "episodes", multiple=True, help="An episode to render, as SHARD:EPISODE (repeatable).")
@click.option("--best", type=Bounded(int, Range(0, 1000)), default=0, help="Also the N episodes of highest "
              "mean advantage.")
@click.option("--worst", type=Bounded(int, Range(0, 1000)), default=0, help="Also the N of lowest mean advantage.")
@click.option("--most-wrong", type=Bounded(int, Range(0, 1000)), default=0, help="Also the N whose start value "
              "is furthest from their actual return (the value model's error about the outcome).")
@click.option("--force", is_flag=True, help="Replace an existing directory at --out (atomically).")
@click.pass_obj
def view_cmd(store: ShardStore, labels: str, out: Path | None, episodes, best: int, worst: int, most_wrong: int,
             force: bool):
    """Render episodes as mp4 videos and PNG contact sheets: the cameras above value, advantage, epsilon and
    indicator. Without a selection: the best, the worst and the most wrong episode."""
    from recap_data.reports.view import view

    out = out or Path(paths.REPORTS_DIR) / f"{labels}-episodes"
    facts = view(store, labels, out, episodes=episodes, best=best, worst=worst, most_wrong=most_wrong, force=force)
    for f in facts:
        click.echo(f"{f['mp4']}: {f['shard']}:{f['episode_index']} ({', '.join(f['chosen'])}), "
                   f"{'success' if f['success'] else 'failure'}, {f['frames']} frames, mean advantage "
                   f"{f['mean_advantage']:.4f}, V(o_0) {f['start_value']:.3f} against return {f['start_return']:.3f}")
    codec = f" ({facts[0]['codec']})" if facts else ""
    click.echo(f"wrote {len(facts)} episode videos{codec} and contact sheets to {out}")


def _label_summary(m) -> str:
    eps = ", ".join(f"{s['positive_fraction']:.3f}" for s in m.per_task.values())
    return (f"wrote label set {m.name}: {m.frames} frames, {m.positive_fraction:.3f} positive "
            f"(target {m.advantage['positive_fraction']}; per task {eps}), {m.digest[:19]}")


LABEL_COMMANDS = [label_cmd, relabel_cmd, report_cmd, export_cmd, view_cmd]
