"""The pictures of `recap-data view` (reports/view.py): an episode's static picture, drawn once by
matplotlib, and each video frame and the contact sheet composited from it in numpy.

Drawing a figure costs matplotlib tens of milliseconds (more than encoding a frame), and
building one (axes, ticks) as much again, so one figure is built per frame size and redrawn once
per episode with that episode's data: the title, an empty area for the cameras, and under it
the curves (value, n-step target, Monte Carlo return; advantage and epsilon; the indicator as a
band), into an RGB array. A video frame is that array with the cameras pasted in, scaled up by
an integer factor (nearest neighbour, so pixels stay sharp), and a cursor line at the frame's x,
restored from the background when it moves on. The contact sheet is the same array with
thumbnails, dotted marks and captions (PIL, in matplotlib's font): no matplotlib per frame, and
one draw per episode.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

DPI = 100
TITLE_H = 44  # two lines: where and how the episode ended; its task
PANEL_H = 292  # the curves: value 120, advantage 100, indicator band 16, margins and tick labels
MIN_WIDTH = 512
CAMERA_H = 256  # cameras are scaled up by an integer factor to at most this height (never down)
GAP = 4  # pixels between cameras
POSITIVE, NEGATIVE, CURSOR = "#228833", "#cc3311", (20, 20, 20)


@dataclass
class Curves:
    """An episode's labels, one entry per frame (rows of the label set in frame order)."""

    value: np.ndarray  # V(o_t)
    target: np.ndarray  # n-step return + V(o_t+N): what the advantage compares V(o_t) with
    mc_return: np.ndarray  # the actual normalized return (return_norm)
    advantage: np.ndarray
    indicator: np.ndarray  # bool
    epsilon: float  # the frame's threshold, one per episode (per task or global)

    @classmethod
    def of(cls, rows: pd.DataFrame) -> "Curves":
        # nstep_return alone is -N/normalizer until the episode's last N frames (a flat line): the
        # n-step target with its bootstrap value is the curve the advantage is measured against.
        return cls(rows["value"].to_numpy(), (rows["nstep_return"] + rows["value_next"]).to_numpy(),
                   rows["return_norm"].to_numpy(), rows["advantage"].to_numpy(),
                   rows["indicator"].to_numpy(bool), float(rows["epsilon"].iloc[0]))

    def __len__(self) -> int:
        return len(self.value)


def camera_scale(shapes: list[tuple]) -> int:
    """Integer factor that brings the tallest camera to about CAMERA_H pixels (1 if it is taller)."""
    return max(1, CAMERA_H // max(s[0] for s in shapes))


def _even(n: int) -> int:
    return n + n % 2  # yuv420p halves both dimensions



class Picture:
    """The static picture of episodes of one frame size, as a matplotlib figure: the title, a blank
    area `top_h` high for the cameras, the curves under it. Built once, drawn per episode (show)."""

    def __init__(self, width: int, top_h: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self.width, self.height = width, _even(TITLE_H + top_h + PANEL_H)
        self.fig = Figure(figsize=(width / DPI, self.height / DPI), dpi=DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        self.title = (self.fig.text(0.5, 1 - 14 / self.height, "", ha="center", va="center", fontsize=10,
                                    weight="bold"),
                      self.fig.text(0.5, 1 - 33 / self.height, "", ha="center", va="center", fontsize=8.5))

        def axes(top: int, h: int):  # pixels from the top of the panel -> an axes across the width
            y = TITLE_H + top_h + top
            return self.fig.add_axes((56 / width, 1 - (y + h) / self.height, (width - 68) / width, h / self.height))

        top, adv, band = self.axes = axes(10, 120), axes(138, 100), axes(244, 16)
        self.lines = (top.plot([], [], color="#4477aa", lw=1.6, label="value V(o_t)")[0],
                      top.plot([], [], color="#ee7733", lw=1.0, label="n-step return + V(o_t+N)")[0],
                      top.plot([], [], color="#555555", lw=1.0, ls="--", label="return (actual)")[0],
                      adv.plot([], [], color="#aa3377", lw=1.2, label="advantage")[0])
        self.epsilon = adv.axhline(0, color=NEGATIVE, lw=1.0, ls="--", label="epsilon")
        top.set_ylabel("norm. return", fontsize=7)
        adv.set_ylabel("advantage", fontsize=7)
        self.legends = [ax.legend(fontsize=6.5, loc="best", ncol=3, framealpha=0.8) for ax in (top, adv)]
        for ax in (top, adv):
            ax.tick_params(bottom=False, labelbottom=False)  # the band's axis numbers the frames
        self.band = band.imshow(np.zeros((1, 1), np.uint8), aspect="auto", interpolation="nearest", vmin=0, vmax=1,
                                cmap=ListedColormap([NEGATIVE, POSITIVE]))
        band.xaxis.set_major_locator(MaxNLocator(integer=True))  # frames, never 2.5
        band.set_yticks([])
        band.set_ylabel("ind.", fontsize=7, rotation=0, ha="right", va="center")
        band.set_xlabel("frame", fontsize=7, labelpad=1)
        for ax in self.axes:
            ax.tick_params(labelsize=6.5, length=2, pad=1)

    def show(self, title: tuple[str, str], curves: Curves) -> np.ndarray:
        """(H, W, 3) uint8: the picture of an episode."""
        self.title[0].set_text(title[0])
        self.title[1].set_text(title[1][: self.width // 6])  # about what fits at 8.5 pt
        t = np.arange(len(curves))
        for line, y in zip(self.lines, (curves.value, curves.target, curves.mc_return, curves.advantage),
                           strict=True):
            line.set_data(t, y)
        self.epsilon.set_ydata([curves.epsilon, curves.epsilon])
        self.legends[1].get_texts()[1].set_text(f"epsilon {curves.epsilon:.4g}")
        self.band.set_data(curves.indicator[None, :].astype(np.uint8))  # (1, T): one row of colours
        self.band.set_extent((-0.5, len(t) - 0.5, 0, 1))
        for ax in self.axes:
            ax.set_xlim(-0.5, len(t) - 0.5)
        for ax in self.axes[:2]:
            ax.relim()  # the y range of this episode's curves (and epsilon)
            ax.autoscale_view(scalex=False)
        self.canvas.draw()
        picture = np.asarray(self.canvas.buffer_rgba())[..., :3]  # (H', W', 3): may be a pixel off (rounding)
        out = np.full((self.height, self.width, 3), 255, np.uint8)
        h, w = min(self.height, picture.shape[0]), min(self.width, picture.shape[1])
        out[:h, :w] = picture[:h, :w]
        return out

    def cursor(self, frames: int) -> tuple[np.ndarray, tuple[int, int]]:
        """(x of each frame (T,), (first row, end row)) of a cursor across the curves, as last drawn."""
        top, _, band = self.axes
        t = np.arange(frames)
        xs = band.transData.transform(np.column_stack([t, np.zeros(frames)]))[:, 0]  # (T,) pixels from the left
        rows = (self.height - int(round(top.bbox.y1)), self.height - int(round(band.bbox.y0)))  # y from the bottom
        return np.clip(np.rint(xs).astype(int), 0, self.width - 2), rows


class EpisodeFrames:
    """The pictures of one episode: compose(t, cameras) is video frame t (H, W, 3) uint8, one
    buffer reused for every frame (the encoder copies it); sheet(key_frames) the contact sheet.
    `pictures` ({(width, top_h): Picture}) keeps figures for the next episodes of the same size."""

    def __init__(self, title: tuple[str, str], curves: Curves, camera_shapes: list[tuple],
                 pictures: dict | None = None):
        self.curves, self.scale = curves, camera_scale(camera_shapes)
        widths = [s[1] * self.scale for s in camera_shapes]
        cameras_w = sum(widths) + GAP * (len(widths) - 1)
        self.width = _even(max(MIN_WIDTH, cameras_w + 16))
        self.area = max(s[0] for s in camera_shapes) * self.scale + 8  # rows of the camera area
        pictures, size = {} if pictures is None else pictures, (self.width, self.area)
        if size not in pictures:
            pictures[size] = Picture(*size)
        picture = pictures[size]
        self.background = picture.show(title, curves)
        self.height = self.background.shape[0]
        self.cursor_x, self.cursor_rows = picture.cursor(len(curves))
        x0 = (self.width - cameras_w) // 2
        self.camera_at = [(TITLE_H + 4, x) for x in np.cumsum([x0, *[w + GAP for w in widths[:-1]]])]
        self.frame = self.background.copy()
        self.last_x: int | None = None

    def compose(self, t: int, cameras: list[np.ndarray]) -> np.ndarray:
        s = self.scale
        for (y, x), image in zip(self.camera_at, cameras, strict=True):
            h, w = image.shape[:2]
            # (h, w, 3) -> (h, w*s, 3) -> (h*s, w*s, 3): every pixel becomes an s x s block. Two repeats
            # copy whole pixels, then whole rows: 7x faster than reshaping a broadcast (h, s, w, s, 3).
            self.frame[y:y + h * s, x:x + w * s] = image if s == 1 else np.repeat(np.repeat(image, s, 1), s, 0)
        y0, y1 = self.cursor_rows
        if self.last_x is not None:  # the previous cursor, painted over with the background
            self.frame[y0:y1, self.last_x:self.last_x + 2] = self.background[y0:y1, self.last_x:self.last_x + 2]
        self.last_x = int(self.cursor_x[t])
        self.frame[y0:y1, self.last_x:self.last_x + 2] = CURSOR
        return self.frame

    def sheet(self, key_frames: list[tuple[int, list[np.ndarray]]]) -> np.ndarray:
        """(H, W, 3) uint8, the video's size: the cameras at `key_frames` ([(t, [camera (h, w, 3)])]) in
        a grid in the camera area, each outlined in its indicator's colour under a caption with its
        frame, above the curves with those frames marked by dotted lines."""
        from matplotlib import font_manager
        from matplotlib.colors import to_rgb
        from PIL import Image, ImageDraw, ImageFont

        out = self.background.copy()
        y0, y1 = self.cursor_rows
        for t, _ in key_frames:  # a dotted line: 2 pixels of every 4 down the curves
            x = int(self.cursor_x[t])
            out[y0:y1, x][np.arange(y1 - y0) % 4 < 2] = (136, 136, 136)
        cols = min(3, len(key_frames))
        rows = -(-len(key_frames) // cols)
        slot_w, slot_h = self.width // cols, self.area // rows
        captions = []
        for i, (t, cameras) in enumerate(key_frames):
            strip = np.concatenate(cameras, axis=1)  # (h, sum of w, 3): the cameras side by side
            fit = min((slot_w - 12) / strip.shape[1], (slot_h - 20) / strip.shape[0])
            size = (max(1, int(strip.shape[1] * fit)), max(1, int(strip.shape[0] * fit)))
            resample = Image.Resampling.NEAREST if fit >= 1 else Image.Resampling.BOX  # sharp up, averaged down
            thumb = np.asarray(Image.fromarray(strip).resize(size, resample))
            # centred in its slot, under its caption: (slot_h - (caption 16 + thumbnail)) / 2 above
            centre = slot_w * (i % cols) + slot_w // 2
            top = TITLE_H + slot_h * (i // cols) + max(0, (slot_h - 16 - size[1]) // 2)
            y, x = top + 16, centre - size[0] // 2
            positive = bool(self.curves.indicator[t])
            colour = tuple(int(c * 255) for c in to_rgb(POSITIVE if positive else NEGATIVE))
            out[y - 2:y + size[1] + 2, x - 2:x + size[0] + 2] = colour
            out[y:y + size[1], x:x + size[0]] = thumb
            captions.append(((centre, top + 7), f"frame {t} ({'+' if positive else '-'})", colour))
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 10)  # the figure's font
        for xy, text, colour in captions:
            draw.text(xy, text, fill=colour, font=font, anchor="mm")
        return np.asarray(image)
