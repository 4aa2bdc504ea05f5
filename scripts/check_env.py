"""Does the environment really work? Imports what every command needs and checks the GL libraries
LIBERO renders with; one line per problem and exit 1, or one line of versions and exit 0.

Run by scripts/bootstrap.sh after `uv sync`, so a broken or half-installed .venv is found before a
pipeline or test run starts, not an hour into it. `--missing-gl-packages` prints only the Debian
packages of the missing GL libraries (for the bootstrap to install).
"""

import importlib
import logging
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# What the commands import, by what they do with it (lazy imports included).
MODULES = [
    "recap_data.cli.main",  # every command, and through it the store, labels and trainers
    "torch", "transformers", "accelerate", "safetensors", "tokenizers",
    "lerobot.datasets.lerobot_dataset", "lerobot.policies.pi0.modeling_pi0",
    "duckdb", "pyarrow.parquet", "pandas", "av", "PIL.Image", "imageio_ffmpeg", "matplotlib.pyplot",
    "mujoco", "gymnasium", "dvc.repo",
]


def main() -> int:
    from recap_data.errors import first_line
    from recap_data.sim.gl import missing_packages

    if "--missing-gl-packages" in sys.argv:
        print(" ".join(missing_packages()))
        return 0
    start, problems = time.perf_counter(), []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:
            problems.append(f"check_env: `import {name}` fails ({type(e).__name__}: {first_line(e)}); "
                            "reinstall with `rm -rf .venv && make venv`")
    if not problems:
        import imageio_ffmpeg

        try:
            imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError as e:
            problems.append(f"check_env: no ffmpeg binary ({e}); reinstall with `rm -rf .venv && make venv`")
        from recap_data.sim.libero import configure

        try:
            configure()  # LIBERO's config, scene assets and the GL libraries
            logging.disable(logging.WARNING)  # robosuite warns of its private macro file at import
            importlib.import_module("lerobot.envs.libero")  # imports LIBERO's envs, robosuite, bddl
            logging.disable(logging.NOTSET)
        except Exception as e:
            problems.append(f"check_env: {first_line(e)}")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    import lerobot
    import torch

    print(f"check_env: ok (python {sys.version.split()[0]}, torch {torch.__version__}, lerobot "
          f"{lerobot.__version__}, MUJOCO_GL={os.environ['MUJOCO_GL']}; {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
