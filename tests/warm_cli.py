"""A warm `recap-data` for tests that run dozens of commands (the DVC pipeline's): a server imports
torch, LeRobot and recap-data once and forks a child per command; a shim named `recap-data`, first
on PATH, hands the server its argv, working directory, environment and stdin/stdout/stderr, and
exits with the child's status. Each command is still the real CLI in a process of its own, only
without the ~6 s of imports each stage process would spend (`tests/test_readme.py` and the
torchrun tests keep starting the installed entry point cold).

Commands are served one at a time (DVC runs stages one after another), so the server forks from a
single-threaded process that has imported torch but never run an operation in it."""

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

PRELOAD = (  # what the pipeline's commands import lazily: the expensive part of a cold start
    "torch", "torchvision", "transformers", "duckdb", "matplotlib.pyplot", "pandas", "pyarrow.parquet",
    "lerobot.configs", "lerobot.datasets.lerobot_dataset", "lerobot.processor", "lerobot.policies.factory",
    "lerobot.policies.pi0.modeling_pi0", "lerobot.policies.pi05.modeling_pi05",
    "recap_data.cli.main", "recap_data.data.base_data", "recap_data.labels.infer", "recap_data.labels.relabel",
    "recap_data.pipeline.summary", "recap_data.policy.model", "recap_data.policy.train",
    "recap_data.reports.report", "recap_data.sim.evaluate", "recap_data.sim.rollout", "recap_data.value.model",
    "recap_data.value.train",
)

SHIM = """#!{python} -S
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect({socket!r})
request = json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(s, [request], [0, 1, 2])
sys.exit(int(s.recv(16) or 1))
"""


def run_command(request: dict, fds: list[int]) -> None:
    """In the forked child: become the shim's process (stdio, cwd, env, argv), run the CLI, exit."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    code = 1
    try:
        from recap_data.cli.main import main

        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str) -> None:
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                run_command(json.loads(message), fds)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            conn.send(str(code if code >= 0 else 128 - code).encode())


@contextmanager
def warm_cli(folder: Path):
    """A server and, in `folder`/bin, the `recap-data` shim: put that folder first on PATH."""
    import subprocess

    bin_dir, path = folder / "bin", str(folder / "cli.sock")
    bin_dir.mkdir(parents=True)
    server = subprocess.Popen([sys.executable, __file__, path], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", "the warm recap-data server did not start"
        shim = bin_dir / "recap-data"
        shim.write_text(SHIM.format(python=sys.executable, socket=path))
        shim.chmod(0o755)
        yield bin_dir
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
