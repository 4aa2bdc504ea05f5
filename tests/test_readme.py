"""The README's five-minute tour runs as written, in an empty folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the README tour, end to end

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_commands() -> list[str]:
    section = README.read_text().split("## A five-minute tour")[1].split("\n## ")[0]
    block = section.split("```sh")[1].split("```")[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def test_the_tour_runs_and_leaves_what_it_says(tmp_path, warm_cli_bin):
    commands = tour_commands()
    assert commands[0].startswith("export RECAP_DATA_ROOT=") and len(commands) >= 6
    # `recap-data` is the warm shim (tests/warm_cli.py): each command the real CLI, forked warm
    path = os.pathsep.join([str(warm_cli_bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1"}
    env.pop("RECAP_DATA_ROOT", None)
    script = "set -euo pipefail\n" + "\n".join(commands)
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote label set tour: " in proc.stdout and "0.300 positive" in proc.stdout
    assert "wrote label set tour-50: " in proc.stdout and "0.500 positive" in proc.stdout
    assert (tmp_path / "reports" / "tour" / "advantage_histogram.png").is_file()
    assert (tmp_path / "tour-data" / "labels" / "tour-50" / "manifest.json").is_file()
