"""recap-data: versioned, queryable datasets for RECAP (advantage-conditioned offline RL for VLAs)."""

import logging
import os

from recap_data.errors import RecapError

# lerobot logs a 60-line traceback at import when torchcodec finds no system FFmpeg, then
# falls back to PyAV (its datasets decode with PyAV; recap-data's own reader, decode.py, runs
# the imageio-ffmpeg binary): keep that out of every command.
logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)

# The SVT-AV1 encoder that LeRobot uses for videos prints ~20 info lines per episode; errors only.
os.environ.setdefault("SVT_LOG", "1")

__version__ = "0.1.0"
__all__ = ["RecapError", "__version__"]
