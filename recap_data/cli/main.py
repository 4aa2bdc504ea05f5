"""The `recap-data` command line: each command is a few lines over a library function."""

import json
import sys
from pathlib import Path

import click

from recap_data.cli.labels import LABEL_COMMANDS
from recap_data.cli.stages import load_stage, params_option, stage_options
from recap_data.config import InputDir, InputFile, OutputDir, OutputFile, config_options, load_config
from recap_data.data.demo_data import DemoDataConfig
from recap_data.errors import RecapError
from recap_data.store import paths
from recap_data.store.store import MISSING_FIX, ShardStore


def fail(message: str, code: int = 2) -> None:
    """Print `error: <message>` as one line on stderr and exit; a progress bar still drawing is
    closed first, so the error starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def usage_error(e: click.UsageError) -> str:
    """Click's usage error (wrong type, unknown option, missing argument) as one line with the fix."""
    command = e.ctx.command_path if e.ctx is not None else "recap-data"
    if isinstance(e, click.BadParameter) and e.param is not None and e.param.param_type_name == "option":
        text = f"option {e.param.opts[0]}: {e.message}"
    else:
        text = e.format_message()
    return f"{text.rstrip('.')}; see `{command} --help`"


class RecapGroup(click.Group):
    """Every error is one `error: <line>` on stderr and exit status 2, without a traceback:
    RecapError (bad input found by recap-data) and click's own usage errors alike."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RecapError as e:
            fail(str(e))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            fail(usage_error(e))
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.Abort:  # Ctrl-C: writers have cleaned up on the way out
            fail("interrupted; nothing was committed by the interrupted step", 130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=RecapGroup)
@click.option("--root", type=OutputDir, envvar=paths.ROOT_ENV,
              default=paths.DEFAULT_ROOT, show_default=True, help="Data root holding the shards "
              f"(environment: {paths.ROOT_ENV}).")
@click.version_option(package_name="recap-data")
@click.pass_context
def cli(ctx, root: Path):
    """recap-data: versioned, queryable datasets for RECAP (advantage-conditioned offline RL)."""
    ctx.obj = ShardStore(root)


@cli.command("make-demo-data")
@config_options(DemoDataConfig)
@click.pass_obj
def make_demo_data_cmd(store: ShardStore, **options):
    """Record the embedded base shard: scripted demonstrators in the embedded world, in a named regime.

    Re-running with the same options finds the shard already there and changes nothing."""
    from recap_data.data.demo_data import make_demo_data

    m = make_demo_data(store, load_config(DemoDataConfig, None, options))
    click.echo(f"wrote shard {m.shard_id}: {m.episodes} episodes, {m.frames} frames, "
               f"{m.successes} successes, {m.digest}")


@cli.group()
def shards():
    """List, inspect, verify and import shards."""


@shards.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def shards_list(store: ShardStore, as_json: bool):
    """List the committed shards of the data root."""
    rows = [{"shard": m.shard_id, "kind": m.kind, "episodes": m.episodes, "frames": m.frames,
             "successes": m.successes, "fps": m.fps, "synthetic": m.synthetic, "created_at": m.created_at,
             "digest": m.digest[:19]} for m in store.manifests()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no shards in {store.root}; create one with `recap-data make-demo-data` or `shards import`")
    else:
        header = list(rows[0])
        widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
        for line in [dict(zip(header, header, strict=True)), *rows]:
            click.echo("  ".join(str(line[h]).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())


@shards.command("show")
@click.argument("shard_id")
@click.option("--files", is_flag=True, help="Include the per-file digests.")
@click.pass_obj
def shards_show(store: ShardStore, shard_id: str, files: bool):
    """Print a shard's manifest (schema, counts, source, digest) as JSON."""
    data = json.loads(store.manifest(shard_id).to_json())
    if not files:
        data["files"] = f"{len(data['files'])} files (--files lists them)"
    click.echo(json.dumps(data, indent=2))


@shards.command("verify")
@click.argument("shard_ids", nargs=-1)
@click.pass_obj
def shards_verify(store: ShardStore, shard_ids: tuple[str, ...]):
    """Recompute digests, check parquet footers and counts, load with LeRobot (all shards by default,
    and then also list as MISSING the shards that label sets name and the store lacks)."""
    from recap_data.store.label_sets import absent_shards
    from recap_data.store.verify import verify_shard

    ids = list(shard_ids) or store.shard_ids()
    absent = {} if shard_ids else absent_shards(store)  # all shards: also those that should be there
    if not ids and not absent:
        raise RecapError(f"{store.shards_dir}: no shards to verify (`dvc pull` fetches them where DVC tracks "
                         "the store)")
    failed = 0
    for shard_id in ids:
        problems = verify_shard(store, shard_id)
        click.echo(f"{shard_id}: {'ok' if not problems else 'FAILED'}")
        for p in problems:
            click.echo(f"  {p}")
        failed += bool(problems)
    for shard_id, why in absent.items():
        click.echo(f"{shard_id}: MISSING\n  {why}")
    if failed or absent:
        missing = f", {len(absent)} missing ({', '.join(absent)}: {MISSING_FIX})" if absent else ""
        raise RecapError(f"{failed} of {len(ids)} shard(s) failed verification{missing}")


@shards.command("import")
@click.argument("src", type=InputDir)
@click.option("--id", "shard_id", required=True, help="Id of the new shard.")
@click.option("--all-success", is_flag=True, help="Every episode succeeded (demonstrations).")
@click.option("--success-column", help="Episode succeeded if this column is true on any of its frames.")
@click.option("--success-episodes", type=InputFile,
              help="File listing the successful episode indices (JSON list or one per line).")
@click.option("--intervention-column", help="Column flagging human-intervention frames (default: none).")
@click.option("--kind", type=click.Choice(["base", "import"]), default="base", show_default=True,
              help="Shard kind recorded in the manifest.")
@click.pass_obj
def shards_import(store: ShardStore, src: Path, shard_id: str, all_success: bool, success_column: str | None,
                  success_episodes: Path | None, intervention_column: str | None, kind: str):
    """Import an existing LeRobot v3 dataset directory SRC as a new shard."""
    from recap_data.store.importer import import_shard

    chosen = [m for m, on in (("all-success", all_success), ("column", success_column),
                              ("episodes", success_episodes)) if on]
    if len(chosen) != 1:
        raise RecapError("shards import: give exactly one of --all-success, --success-column COL, "
                         "--success-episodes FILE")
    m = import_shard(store, src, shard_id, outcome=chosen[0], success_column=success_column,
                     success_episodes=success_episodes, intervention_column=intervention_column, kind=kind).manifest
    click.echo(f"imported {src} as shard {m.shard_id}: {m.episodes} episodes, {m.frames} frames, "
               f"{m.successes} successes")


@cli.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", type=OutputFile, help="Write to FILE (atomically).")
@click.option("--labels", help="Label set whose rows the views `labels` and `labeled_frames` show.")
@click.pass_obj
def sql_cmd(store: ShardStore, query: str, fmt: str, output: Path | None, labels: str | None):
    """Run SQL over the views shards, tasks, episodes, frames, label_sets (and labels, labeled_frames)."""
    from recap_data.store.db import connect, run_query, write_result

    text = write_result(run_query(connect(store.root, labels=labels), query), fmt, output)
    if text is not None:
        click.echo(text, nl=not text.endswith("\n"))


def training_outputs(command):
    """--metrics, --loss-csv and --force, as every trainer takes them."""
    for decorate in reversed([
        click.option("--metrics", type=OutputFile,
                     help="Also write the headline metrics as JSON here (the checkpoint's metrics.json holds "
                          "them all)."),
        click.option("--loss-csv", type=OutputFile,
                     help="Also write the loss curve CSV here (the checkpoint always holds loss.csv)."),
        click.option("--force", is_flag=True, help="Replace an existing checkpoint at --out (atomically).")]):
        command = decorate(command)
    return command


@cli.group()
def train():
    """Train the value function or the policy (pi0 or pi0.5) on shards."""


@train.command("value")
@click.option("--shard", "shards", multiple=True, required=True,
              help="Shard to train on: ID or ID=WEIGHT (relative sampling weight); repeat or comma-separate.")
@click.option("--out", type=OutputDir, required=True, help="Checkpoint directory to write.")
@click.option("--init", type=InputDir, help="Fine-tune from this value checkpoint.")
@params_option("train value")
@training_outputs
@stage_options("train value")
@click.pass_obj
def train_value_cmd(store: ShardStore, shards, out: Path, init: Path | None, params: Path | None,
                    metrics: Path | None, loss_csv: Path | None, force: bool, **options):
    """Train (or, with --init, fine-tune) the distributional value model; held-out episodes are scored."""
    from recap_data.data.shard_specs import parse_mixture
    from recap_data.value.train import train_value

    cfg, reward = load_stage("train value", params, options)
    result = train_value(store, parse_mixture(shards, store), out, cfg, reward, init=init, metrics_path=metrics,
                         loss_path=loss_csv, force=force)
    if not result:  # another process of a data-parallel run: the main one reports
        return
    held = result.get("holdout")
    summary = (f"held-out value MAE {held['value_mae']:.4f} (its median {held['value_median_mae']:.4f}, "
               f"best constant {held['constant_mae']:.4f}), "
               f"bin accuracy {held['bin_accuracy']:.3f}" if held else "no held-out episodes")
    click.echo(f"wrote value checkpoint {out}: {result['train']['steps']} steps; {summary}")


@train.command("policy")
@click.option("--shard", "shards", multiple=True,
              help="Shard to train on: ID or ID=WEIGHT (relative sampling weight); repeat or comma-separate. "
                   "Default with --labels: every shard of the label set, weight 1.")
@click.option("--labels", help="Label set whose indicator conditions the prompt (needed for --indicator-mode use).")
@click.option("--out", type=OutputDir, required=True, help="Checkpoint directory to write.")
@click.option("--init", type=InputDir, help="Continue from this policy checkpoint (the SFT one).")
@params_option("train policy")
@training_outputs
@stage_options("train policy")
@click.pass_obj
def train_policy_cmd(store: ShardStore, shards, labels: str | None, out: Path, init: Path | None,
                     params: Path | None, metrics: Path | None, loss_csv: Path | None, force: bool, **options):
    """Fine-tune pi0 or pi0.5 with "Advantage: positive/negative" in its prompt (mode on, use or ignore)."""
    from recap_data.data.shard_specs import parse_mixture
    from recap_data.policy.train import train_policy

    (cfg,) = load_stage("train policy", params, options)
    mixture = parse_mixture(shards, store) if shards else None
    result = train_policy(store, mixture, labels, out, cfg, init=init, metrics_path=metrics, loss_path=loss_csv,
                          force=force)
    if result:  # other processes of a data-parallel run return {}
        click.echo(f"wrote policy checkpoint {out}: {result['steps']} steps, loss {result['first_loss']:.3f} -> "
                   f"{result['final_loss']:.3f}, prompts {result['prompt_fractions']}")


def policy_run_options(command: str, metrics_help: str):
    """--policy, --params and --metrics, as rollout and eval take them."""
    def decorate(function):
        for option in reversed([
            click.option("--policy", required=True, help="Policy checkpoint directory (from `train policy`) or "
                                                          "`random`."),
            params_option(command),
            click.option("--metrics", type=OutputFile, help=metrics_help)]):
            function = option(function)
        return function
    return decorate


@cli.command("rollout")
@click.option("--out", "shard_id", required=True, help="Id of the new rollout shard.")
@policy_run_options("rollout", "Write the rollouts' success rate as JSON here (the shard's manifest has every "
                               "episode).")
@stage_options("rollout")
@click.pass_obj
def rollout_cmd(store: ShardStore, policy: str, shard_id: str, params: Path | None, metrics: Path | None,
                **options):
    """Roll the policy out in the embedded world or on one LIBERO task (headless); record a new shard."""
    from recap_data.sim.rollout import rollout

    (cfg,) = load_stage("rollout", params, options)
    manifest, result = rollout(store, shard_id, policy, cfg, metrics_path=metrics)
    if manifest is None:  # another process of a multi-process rollout: the main one reports
        return
    click.echo(f"wrote shard {manifest.shard_id}: {result['episodes']} episodes, {result['frames']} frames, "
               f"success rate {result['success_rate']:.2f}, {result['env_steps_per_s']} env steps/s")


@cli.command("eval")
@policy_run_options("eval", "Write the success rate and its 95% Wilson interval (ci_low, ci_high) as JSON here.")
@click.option("--record", type=OutputFile,
              help="Write the whole evaluation as JSON here: policy and digest, env, task, guidance, episodes, "
                   "successes, episode lengths, initial states, seeds, config.")
@stage_options("eval")
@click.pass_obj
def eval_cmd(store: ShardStore, policy: str, params: Path | None, metrics: Path | None, record: Path | None,
             **options):
    """Success rate and throughput of a policy on held-out initial states and seeds (nothing is recorded)."""
    from recap_data.sim.evaluate import evaluate

    (cfg,) = load_stage("eval", params, options)
    m = evaluate(store, policy, cfg, metrics_path=metrics, record_path=record)
    if m is None:  # another process of a multi-process evaluation: the main one reports
        return
    low, high = m["success_ci95"]
    t_low, t_high = m["throughput_ci95"]
    steps = "none succeeded" if m["success_steps"] is None else f"{m['success_steps']:.1f}"
    click.echo(f"{policy}: success {m['successes']}/{m['episodes']} = {m['success_rate']:.3f} "
               f"(95% CI {low:.3f}-{high:.3f}), mean episode length {m['mean_episode_length']:.1f}, "
               f"steps of a success {steps}, throughput {m['throughput']:.2f} successes per "
               f"{m['throughput_per']:,} steps (95% CI {t_low:.2f}-{t_high:.2f})")


@cli.command("base")
@params_option("base")
@stage_options("base")
@click.pass_obj
def base_cmd(store: ShardStore, params: Path | None, **options):
    """Write the pipeline's base shard: the embedded generator (source demo) or an imported LeRobot dataset."""
    from recap_data.data.base_data import make_base

    (cfg,) = load_stage("base", params, options)
    m = make_base(store, cfg)
    click.echo(f"base shard {m.shard_id}: {m.episodes} episodes, {m.frames} frames, {m.successes} successes")


@cli.command("index")
@click.option("--add", "add", multiple=True, required=True, help="Shard to add to the index (repeatable).")
@click.option("--prev", type=InputFile,
              help="The previous iteration's index file, whose shards come first.")
@click.option("--out", type=OutputFile, required=True, help="Index file to write.")
@params_option("index")
@stage_options("index")
@click.pass_obj
def index_cmd(store: ShardStore, add, prev: Path | None, out: Path, params: Path | None, **options):
    """Write a shard index (PREV's shards plus --add ones, with weights and digests), read by `--shard @FILE`."""
    from recap_data.store.shard_index import write_index

    (cfg,) = load_stage("index", params, options)
    entries = write_index(store, out, list(add), cfg, prev)
    click.echo(f"wrote {out}: " + ", ".join(f"{e['id']}={e['weight']:g}" for e in entries))


@cli.command("summary")
@click.option("--params", type=InputFile, required=True,
              help="params.yaml whose `iterations` section orders the rows.")
@click.option("--metrics-dir", type=InputDir, default=Path(paths.METRICS_DIR),
              show_default=True, help="Folder with one metrics folder per iteration.")
@click.option("--out", type=OutputFile, required=True, help="CSV file to write.")
@click.option("--png", type=OutputFile, help="Also plot success and throughput by iteration here.")
def summary_cmd(params: Path, metrics_dir: Path, out: Path, png: Path | None):
    """One CSV row per policy (SFT, then each iteration): held-out success rate and throughput with their
    95% intervals, RECAP's and each baseline's (params `baselines`), rollout success, value MAE, labelled and
    trained positive fractions."""
    from recap_data.pipeline.summary import summarize

    rows = summarize(params, metrics_dir, out, png)
    click.echo(f"wrote {out}: " + ", ".join(f"{r['name']} {r['success_rate']:.2f} [{r['ci_low']:.2f}, "
                                            f"{r['ci_high']:.2f}]" for r in rows))


for command in LABEL_COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="recap-data")


if __name__ == "__main__":
    sys.exit(main())
