"""A warm `recap-data` for tests that run many commands (the DVC pipeline's, the README tour's, the
processes torchrun starts): a server imports torch, LeRobot and recap-data once and forks a child
per command; a shim named `recap-data` (first on PATH, or what `torchrun --no-python` starts)
hands the server its argv, working directory, environment and stdin/stdout/stderr, and exits with
the child's status (128 + N for a child killed by signal N). Each command is still the real CLI in
a process of its own, only without the ~6 s of imports a cold start spends; the killed writers of
the crash tests and one torchrun test start cold, as a user's commands do.

What a module reads from the environment when it is imported (HF_HUB_OFFLINE, LeRobot's
HF_LEROBOT_HOME) keeps the server's values, which are the test worker's: the server is for
commands run with the worker's environment plus what is read at call time (PATH, torchrun's
ranks and rendezvous); OMP_NUM_THREADS is applied in the child with torch.set_num_threads.
Commands run side by side (a torchrun's ranks must); the server runs no Python thread and no
torch operation before it forks (a native thread a library starts at import, such as pyarrow's
jemalloc, is covered by that library's fork handlers, as when LeRobot forks its encoders). A shim
that dies takes its command's process group with it."""

import contextlib
import json
import os
import select
import signal
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


def run_command(message: bytes, fds: list[int]) -> None:
    """In the forked child: become the shim's process (stdio, cwd, env, argv), run the CLI, and exit
    with its status; never returns into the server's loop, whatever fails."""
    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own: the server kills it whole when the shim dies
        request = json.loads(message)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if "OMP_NUM_THREADS" in os.environ:  # read by torch at import, in the server: set it as a cold start would
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        sys.argv = request["argv"]
        from recap_data.cli.main import main

        main()
        code = 0
    except SystemExit as e:  # what the interpreter does with it: an int is the status, anything else is printed
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def serve(path: str) -> None:
    """Serve commands side by side (torchrun's ranks must run at once): a child per command; its
    exit status goes back to its shim, and a shim that hangs up first (killed, timed out) gets
    its child's process group killed, so that a stuck command holds nothing."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(64)
    print("ready", flush=True)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the shim's connection)
    killed: set[int] = set()  # pidfds of the children killed for a shim that hung up: waiting to be reaped
    while True:  # (a hung-up shim stays readable: watching it until its child is reaped would spin)
        shims = {conn.fileno(): fd for fd, (_, conn) in running.items() if fd not in killed}
        ready, _, _ = select.select([server, *running, *shims], [], [])
        for fd in ready:
            if fd is server:
                conn, _ = server.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    server.close()
                    for _, other in running.values():
                        other.close()
                    run_command(message, fds)
                for received in fds:
                    os.close(received)
                running[os.pidfd_open(pid)] = (pid, conn)
            elif fd in shims:  # a shim hung up (or sent something, which it never does) before its child ended
                if shims[fd] in running:  # (not reaped earlier in this round)
                    with contextlib.suppress(ProcessLookupError):  # reaped when its pidfd turns ready
                        os.killpg(running[shims[fd]][0], signal.SIGKILL)
                    killed.add(shims[fd])
            elif fd in running:
                pid, conn = running.pop(fd)
                killed.discard(fd)
                os.close(fd)
                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                try:
                    conn.send(str(code if code >= 0 else 128 - code).encode())
                except OSError:  # the shim is gone: nobody to tell
                    pass
                conn.close()


@contextmanager
def warm_cli(folder: Path):
    """A server and, in `folder`/bin, the `recap-data` shim: put that folder first on PATH. The
    server's own output goes to `folder`/server.log."""
    import subprocess

    bin_dir, path, log = folder / "bin", str(folder / "cli.sock"), folder / "server.log"
    bin_dir.mkdir(parents=True)
    with open(log, "w") as stderr:
        server = subprocess.Popen([sys.executable, __file__, path], stdout=subprocess.PIPE, stderr=stderr,
                                  text=True, start_new_session=True)
    try:
        assert server.stdout.readline().strip() == "ready", f"the warm recap-data server did not start: {log}"
        shim = bin_dir / "recap-data"
        shim.write_text(SHIM.format(python=sys.executable, socket=path))
        shim.chmod(0o755)
        yield bin_dir
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
