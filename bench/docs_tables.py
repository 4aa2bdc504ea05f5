"""Benchmark figures in docs/ come from bench/results/*.json, never typed by hand.

Each table or list of figures sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a
docs page (or README.md) and is rendered by TABLES[NAME] from its results file, with the machine it was measured
on. After a benchmark run:

    .venv/bin/python bench/docs_tables.py          # rewrite the tables in docs/
    .venv/bin/python bench/docs_tables.py --check  # exit 1 if a table differs (make test runs this)
"""

import argparse
import json
import re
import sys
from pathlib import Path

from tables_labels import labels_decoding, labels_math, labels_overhead, labels_report, labels_sizing, view
from tables_loops import loops, status
from tables_models import policy_budget, time_input, value_inputs
from tables_pipeline import pipeline, policy_data, rollout, value_throughput, world
from tables_real_size import real_size
from tables_recap import recap_arms, recap_findings, recap_value
from tables_scale import label_processes, scale_projection, scale_relabel, store_growth, store_query

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


TABLES = {"loops": ("loops.json", loops), "policy-budget": ("policy_budget.json", policy_budget),
          "value-inputs": ("value_inputs.json", value_inputs),
          "time-input": ("time_input.json", time_input), "real-size": ("real_size.json", real_size),
          "recap-arms": ("recap.json", recap_arms), "recap-value": ("recap.json", recap_value),
          "recap-findings": ("recap.json", recap_findings),
          "store-growth": ("store.json", store_growth), "store-query": ("store.json", store_query),
          "labels-decoding": ("labels.json", labels_decoding), "labels-sizing": ("labels.json", labels_sizing),
          "labels-overhead": ("labels.json", labels_overhead),
          "labels-math": ("labels.json", labels_math), "policy-data": ("policy.json", policy_data),
          "labels-report": ("report.json", labels_report),
          "rollout": ("rollout.json", rollout), "world": ("world.json", world),
          "value-throughput": ("value.json", value_throughput), "pipeline": ("pipeline.json", pipeline),
          "scale-relabel": ("scale.json", scale_relabel),
          "scale-processes": ("label_processes.json", label_processes),
          "view": ("view.json", view),
          "scale-projection": (("scale.json", "labels.json", "label_processes.json"), scale_projection),
          "status": (("pipeline.json", "loops.json"), status)}


# A block: the opening marker at the start of a line (maybe indented, inside a list item), anything,
# and its closing marker; the rendered figures get the opening marker's indentation.
MARKED = re.compile(r"^(?P<indent>[ \t]*)<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)"
                    r"^[ \t]*<!-- /bench:(?P=name) -->", re.S | re.M)


OPENING = re.compile(r"^[ \t]*<!-- bench:([\w-]+) -->", re.M)  # (a marker quoted inside a line is text)


def render(text: str, where: str = "page") -> str:
    """The page with every block's figures rendered from its results; an unknown block, an
    opening marker without its closing one, or a block that renders empty is an error."""
    opened = OPENING.findall(text)
    blocks = [m["name"] for m in MARKED.finditer(text)]
    if opened != blocks:
        raise SystemExit(f"{where}: bench markers {sorted(set(opened) - set(blocks)) or opened} are not closed "
                         "by `<!-- /bench:NAME -->` at the start of a line")
    unknown = sorted(set(blocks) - set(TABLES))
    if unknown:
        raise SystemExit(f"{where}: unknown bench block {unknown[0]!r}; known: {', '.join(TABLES)}")

    def load(file: str) -> dict:
        if not (RESULTS / file).is_file():
            raise SystemExit(f"{where}: bench block needs bench/results/{file}; run its benchmark "
                             f"(bench/bench_{file.removesuffix('.json')}.py)")
        return json.loads((RESULTS / file).read_text())

    def table(m):
        files, fn = TABLES[m["name"]]
        # figures from one results file, or from several (a dict of them)
        body = fn({f: load(f) for f in files}) if isinstance(files, tuple) else fn(load(files))
        if not body.strip():
            raise SystemExit(f"{where}: bench block {m['name']!r} renders empty")
        indent = m["indent"]
        lines = "\n".join(indent + line if line else "" for line in body.splitlines())
        return f"{indent}<!-- bench:{m['name']} -->\n{lines}\n{indent}<!-- /bench:{m['name']} -->"

    return MARKED.sub(table, text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 if a docs table differs from its results")
    args = parser.parse_args()
    stale, used = [], set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        used |= set(OPENING.findall(text))
        new = render(text, str(page.relative_to(ROOT)))
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    unused = sorted(set(TABLES) - used)
    if unused:
        print(f"bench blocks {', '.join(unused)} appear in no page; place them or remove them from TABLES",
              file=sys.stderr)
        return 1
    if args.check and stale:
        print(f"stale benchmark tables in {', '.join(map(str, stale))}: run python bench/docs_tables.py",
              file=sys.stderr)
        return 1
    print("rewrote " + ", ".join(map(str, stale)) if stale and not args.check else "docs tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
