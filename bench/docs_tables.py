"""Benchmark tables in docs/ come from bench/results/*.json, never typed by hand.

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a docs page and is
rendered by TABLES[NAME] from its results file. After a benchmark run:

    .venv/bin/python bench/docs_tables.py          # rewrite the tables in docs/
    .venv/bin/python bench/docs_tables.py --check  # exit 1 if a table differs (make test runs this)
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ARM_NAMES = {"bc": "BC (every frame, indicator ignored)", "fbc": "filtered BC (successful episodes only)",
             "recap": 'RECAP, "Advantage: positive" (beta 1)', "recap beta 1.5": "RECAP, guidance beta 1.5",
             "recap beta 2.5": "RECAP, guidance beta 2.5",
             "recap beta 0": "check, not an arm: the RECAP models without the indicator (beta 0, unconditional)"}


def recap_arms(r: dict) -> str:
    n = r["seeds"]
    rows = [f"| arm | success, mean of {n} seeds | 95% interval over seeds (t) | pooled Wilson "
            f"({n * r['arms']['bc']['episodes_per_seed']} episodes) | per seed | mean length |",
            "| --- | --- | --- | --- | --- | --- |"]
    best = max(r["arms"][a]["success_mean"] for a in r["arms"] if a != "recap beta 0")
    for arm, a in r["arms"].items():
        mean = f"{a['success_mean']:.3f}"
        rows.append(f"| {ARM_NAMES.get(arm, arm)} | {f'**{mean}**' if a['success_mean'] == best else mean} | "
                    f"{a['success_ci95_over_seeds'][0]:.3f}-{a['success_ci95_over_seeds'][1]:.3f} | "
                    f"{a['success_pooled_wilson95'][0]:.3f}-{a['success_pooled_wilson95'][1]:.3f} | "
                    f"{', '.join(f'{s:.2f}' for s in a['per_seed'])} | {a['mean_episode_length']:.1f} |")
    return "\n".join(rows)


def recap_value(r: dict) -> str:
    v, b = r["value"], r["value"]["bounds_on_heldout_rollouts"]
    rows = ["| value model quality | figure |", "| --- | --- |",
            f"| held-out MAE (training holdout) | {v['heldout_value_mae']:.3f} against {v['heldout_constant_mae']:.3f} "
            f"for the best constant ({v['mae_ratio']:.2f}x; target {r['targets']['mae_ratio']:g}x) |",
            f"| AUC of V(o_0) on {v['heldout_rollout_episodes']} held-out rollouts | "
            f"{v['auc_v0_heldout_rollouts']:.2f} |"]
    for key, name in (("value_model_mae", "value model"), ("constant_mae", "best constant"),
                      ("state_mlp_mae", "MLP on the full state, time, distances"),
                      ("outcome_oracle_mae", "told the outcome")):
        rows.append(f"| MAE on the held-out rollouts: {name} | {b[key]:.3f} ({b['constant_mae'] / b[key]:.2f}x) |")
    return "\n".join(rows)


TABLES = {"recap-arms": ("recap.json", recap_arms), "recap-value": ("recap.json", recap_value)}
MARKED = re.compile(r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /bench:(?P=name) -->)", re.S)


def render(text: str) -> str:
    def table(m):
        file, fn = TABLES[m["name"]]
        return m.group(1) + fn(json.loads((RESULTS / file).read_text())) + m.group(4)

    return MARKED.sub(table, text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 if a docs table differs from its results")
    args = parser.parse_args()
    stale = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        new = render(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"stale benchmark tables in {', '.join(map(str, stale))}: run python bench/docs_tables.py",
              file=sys.stderr)
        return 1
    print("rewrote " + ", ".join(map(str, stale)) if stale and not args.check else "docs tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
