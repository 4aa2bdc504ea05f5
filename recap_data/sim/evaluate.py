"""`recap-data eval`: a policy's success rate, with its 95% Wilson interval, on held-out episodes,
and beside it what RECAP's reward (-1 a step) also optimises: the mean steps of the successful
episodes, and the throughput, successes per 1,000 environment steps (failed episodes' steps
counted; the RECAP paper's successes per hour, at a fixed control rate), with its interval.

Nothing is recorded. In the embedded world the episodes start from held-out initial states
(world.SPLITS: `validation`, 100-199, for the pipeline and development; `test`, 200-299, for the
benchmark alone; no demonstration or rollout uses either) and their seeds start at
EVAL_SEED_OFFSET (rollout seeds stay below it), so an evaluation never replays a training
episode. LIBERO has only its 50 official initial states per task: rollouts and evaluation share
them, with disjoint seeds.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from recap_data.config import Choice, Count, param
from recap_data.errors import RecapError
from recap_data.sim.episodes import EVAL_SEED_OFFSET, RANDOM, launch, plan_episodes, resolve_env, run_episodes, share
from recap_data.sim.rollout import POLICY_FIX, RolloutConfig, check_policy, policy_config, policy_source
from recap_data.store.schema import AGENTVIEW_KEY
from recap_data.store.store import ShardStore

Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval
THROUGHPUT_PER = 1000  # throughput is successes per this many environment steps


@dataclass
class EvalConfig(RolloutConfig):
    """Evaluation episodes (params.yaml section `eval`); the fields are rollout's."""

    episodes: Count = param(100, "evaluation episodes (at least 100 for an interval narrower than about +-10 points)")
    split: Choice("validation", "test") = param(
        "validation", "embedded: held-out initial states, validation (100-199) or test (200-299)")

    section = "eval"


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n < 1:
        raise RecapError("eval: no episodes; use --episodes 1 or more")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def throughput_interval(successes: list[bool], lengths: list[int], per: int = THROUGHPUT_PER,
                        z: float = Z95) -> tuple[float, float, float]:
    """Successes per `per` environment steps (every episode's steps counted, failures' step caps
    included) and its 95% interval: a ratio of two means over episodes, so its standard error is
    the delta method's, sqrt(sum((s_i - R l_i)^2) / (n (n - 1))) / mean(l). With no success the
    interval is [0, 0]; with one episode, which has no spread, from none to one success in its steps."""
    n = len(lengths)
    if n < 1 or n != len(successes):
        raise RecapError("eval: no episodes; use --episodes 1 or more")
    s, length = [float(x) for x in successes], [float(x) for x in lengths]
    ratio = sum(s) / sum(length)
    if n == 1:
        return per * ratio, 0.0, per / length[0]
    spread = sum((si - ratio * li) ** 2 for si, li in zip(s, length, strict=True))
    se = math.sqrt(spread / (n * (n - 1))) / (sum(length) / n)
    return per * ratio, per * max(0.0, ratio - z * se), per * (ratio + z * se)


def outcome_metrics(outcomes: list[bool], lengths: list[int]) -> dict:
    """What a set of episodes says (one evaluation, or several pooled): success rate with its
    Wilson interval, mean and std of the length, mean steps of a success (None without one),
    throughput with its interval, and the per-episode outcomes and lengths themselves."""
    n, successes = len(lengths), sum(bool(x) for x in outcomes)
    low, high = wilson_interval(successes, n)
    mean_length = sum(lengths) / n
    wins = [length for length, ok in zip(lengths, outcomes, strict=True) if ok]
    throughput, t_low, t_high = throughput_interval(outcomes, lengths)
    return {"episodes": n, "successes": successes, "success_rate": successes / n,
            "success_ci95": [round(low, 4), round(high, 4)], "mean_episode_length": round(mean_length, 2),
            "std_episode_length": round((sum((x - mean_length) ** 2 for x in lengths) / n) ** 0.5, 2),
            "success_steps": round(sum(wins) / len(wins), 2) if wins else None, "throughput": round(throughput, 3),
            "throughput_ci95": [round(t_low, 3), round(t_high, 3)], "throughput_per": THROUGHPUT_PER,
            "outcomes": [bool(x) for x in outcomes], "lengths": [int(x) for x in lengths]}


def policy_image_size(policy: str) -> int | None:
    """The camera size a policy checkpoint was trained on (None for the random policy)."""
    if policy == RANDOM:
        return None
    try:
        return int(policy_config(policy)["input_features"][AGENTVIEW_KEY]["shape"][1])
    except KeyError as e:
        raise RecapError(f"--policy {policy}: config.json has no camera {e}; {POLICY_FIX}") from None


def evaluate(store: ShardStore | None, policy: str, cfg: EvalConfig, metrics_path: Path | None = None,
             progress: bool = True, record_path: Path | None = None) -> dict:
    """Run cfg.episodes held-out episodes of `policy`; returns the whole record (written to `record_path`)
    and writes its headline to `metrics_path`. Under accelerate each process plays its share and the
    main process reduces the outcomes (the others return None)."""
    from contextlib import ExitStack

    from tqdm import tqdm

    from recap_data.io import write_json

    cfg.validate()
    manifests = store.manifests() if store is not None else []
    if manifests:
        image_size = int(manifests[0].features[AGENTVIEW_KEY]["shape"][0])
    else:
        image_size = policy_image_size(policy) or 64
    provenance = check_policy(policy, image_size)  # before the simulator starts
    env = resolve_env(cfg, manifests, image_size, "eval", split=cfg.split)
    plans = plan_episodes(cfg, env.init_states, env.first_state, seed_offset=EVAL_SEED_OFFSET)
    rank, world, _ = launch()
    mine = share(plans, rank, world)
    started, played = time.perf_counter(), []
    with ExitStack() as stack:
        episodes = run_episodes(stack, env, policy, cfg.guidance, mine, cfg.workers, keep_frames=False)
        bar = stack.enter_context(tqdm(total=len(mine), desc=f"eval {env.env}/{env.task_id}", unit="ep",
                                       disable=not progress or rank > 0))
        for episode in episodes:
            played.append({"episode_index": episode["episode_index"], "success": bool(episode["success"]),
                           "length": int(episode["length"])})
            bar.update(1)
            bar.set_postfix(success=f"{sum(e['success'] for e in played)}/{bar.n}")
    if world > 1:  # outcomes are a few numbers an episode: the main process reduces them
        from accelerate.utils import gather_object

        played = sorted(gather_object(played), key=lambda e: e["episode_index"])
        if rank > 0:
            return None
    outcomes, lengths = [e["success"] for e in played], [e["length"] for e in played]
    metrics = {"policy": policy_source(policy, provenance), "env": env.env, **env.source, "task": env.language,
               "guidance": cfg.guidance, **outcome_metrics(outcomes, lengths),
               "init_states": [env.first_state, env.first_state + env.init_states - 1],
               "seeds": [plans[0]["seed"], plans[-1]["seed"]], "wall_s": round(time.perf_counter() - started, 2),
               "config": asdict(cfg)}
    if record_path:
        write_json(Path(record_path), metrics)
    if metrics_path:
        write_json(Path(metrics_path), headline_metrics(metrics))
    return metrics


def headline_metrics(record: dict) -> dict:
    """What `dvc metrics show` shows of an evaluation (numbers only, the same keys for every policy,
    so `dvc metrics diff` compares them): the success rate and its 95% interval, the mean steps of
    the successful episodes (-1 when none succeeded: a number, so that the column stays
    comparable), and the throughput (successes per 1,000 steps) with its 95% interval."""
    low, high = record["success_ci95"]
    t_low, t_high = record["throughput_ci95"]
    steps = record["success_steps"]
    return {"success_rate": record["success_rate"], "ci_low": low, "ci_high": high,
            "success_steps": -1 if steps is None else steps, "throughput": record["throughput"],
            "throughput_low": t_low, "throughput_high": t_high}
