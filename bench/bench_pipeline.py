"""Benchmark of the README's main command (not a test): `make repro` from a fresh clone, timed,
its results written to bench/results/pipeline.json.

It clones the committed HEAD into bench/work/pipeline-clone (nothing of this checkout's data,
models or venv comes along), runs `make repro` there (the bootstrap included: uv installs from
its cache, so the time is mostly the pipeline), and records the wall time, the largest resident
memory of any one process, and the pipeline's own outputs: `plots/success_rate.csv` (each
policy's held-out success with its interval, the rollouts, value MAE, label fractions).

    .venv/bin/python bench/bench_pipeline.py [--keep]
"""

import argparse
import csv
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "pipeline.json"
CLONE = ROOT / "bench" / "work" / "pipeline-clone"


def number(text: str):
    return None if text in ("", "None") else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone (its data, models and venv)")
    args = parser.parse_args()
    shutil.rmtree(CLONE, ignore_errors=True)
    CLONE.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(CLONE)], check=True)
    started = time.perf_counter()
    run = subprocess.run(["make", "repro"], cwd=CLONE)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    if run.returncode != 0:
        print(f"bench_pipeline: `make repro` failed with exit {run.returncode}; the clone is kept in {CLONE}",
              file=sys.stderr)
        return 1
    with open(CLONE / "plots" / "success_rate.csv") as f:
        rows = [{k: (v if k in ("name", "rollout_policy") else number(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]
    results = {"machine": machine_info(), "commit": commit, "command": "make repro (fresh clone)",
               "wall_s": round(wall, 1), "peak_process_rss_mb": round(peak_mb), "policies": rows}
    write_results(RESULTS, results)
    for r in rows:
        print(f"{r['name']}: success {r['success_rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    print(f"make repro from a fresh clone: {wall / 60:.1f} min, peak process memory {peak_mb / 1024:.1f} GB")
    if not args.keep:
        shutil.rmtree(CLONE, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
