"""The system GL libraries LIBERO renders with, checked before a simulator starts.

MuJoCo renders headless through EGL (MUJOCO_GL=egl, set by configure() unless the user chose)
or OSMesa. These come from the system, not from PyPI: without them the first render fails deep
inside PyOpenGL with an error that names neither the library nor the package. The check loads
each library the backend needs; scripts/bootstrap.sh installs the missing Debian packages when
it runs as root (`python scripts/check_env.py --missing-gl-packages` lists them).
"""

import ctypes
import os

from recap_data.errors import RecapError

# backend -> [(alternatives: shared libraries any one of which will do, the Debian package of the first)]
NEEDS = {
    "egl": [(("libEGL.so.1",), "libegl1"),
            (("libOpenGL.so.0", "libGL.so.1"), "libopengl0"),
            # the EGL vendor that draws without a display: Mesa's (software) or NVIDIA's driver
            (("libEGL_mesa.so.0", "libEGL_nvidia.so.0"), "libegl-mesa0")],
    "osmesa": [(("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"), "libosmesa6")],
}


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def _backend(backend: str | None) -> str:
    return (backend or os.environ.get("MUJOCO_GL") or "egl").lower()


def missing_packages(backend: str | None = None) -> list[str]:
    """Debian packages of the GL libraries `backend` (default: $MUJOCO_GL, else egl) needs and
    this machine cannot load; [] for a backend not listed (glfw: a display the user set up)."""
    return [package for names, package in NEEDS.get(_backend(backend), []) if not any(_loads(n) for n in names)]


def check_gl(backend: str | None = None) -> None:
    """Refuse to start a simulator whose renderer cannot load, naming the packages to install."""
    missing = missing_packages(backend)
    if missing:
        backend = _backend(backend)
        raise RecapError(f"LIBERO renders with MUJOCO_GL={backend}, whose system libraries are missing: "
                         f"install the Debian packages {' '.join(missing)} (apt-get install {' '.join(missing)}) "
                         "or run `make venv` as root")
