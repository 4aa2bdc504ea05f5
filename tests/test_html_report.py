"""`recap-data report LABELS --html`: the self-contained page, checked in a real headless Chromium
(Debian's package, driven by playwright without a browser download), and its bad input."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from recap_data.io import FAILPOINT_ENV
from recap_data.store.label_sets import read_manifest
from recap_data.train.checkpoint import directory_digest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = ("no Chromium found (RECAP_CHROMIUM, `chromium` on PATH): `make test` installs Debian's `chromium` "
               "when run as root; else `apt-get install chromium` and run again")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser to test in; the test is skipped, with the reason, where there is none."""
    path = os.environ.get("RECAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip(NO_CHROMIUM)
    pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed: `make venv`")
    return path


def wait_until(page, expression: str, timeout_s: float = 60) -> None:
    """Poll a JavaScript expression until it is true. page.evaluate runs through DevTools, which the
    page's CSP allows; wait_for_function's own polling evals the string, which that CSP blocks."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout_s} s: {expression}"
        page.wait_for_timeout(100)


def report_with_videos(labeled, out: Path, *args: str):
    store, _ = labeled
    return run_cli("report", "raw", "--out", str(out), "--html", *args, root=store.root)


def test_html_report_loads_in_chromium_with_its_plots_and_videos(chromium, labeled, tmp_path):
    from playwright.sync_api import sync_playwright

    store, _ = labeled
    out = tmp_path / "report"
    result = report_with_videos(labeled, out, "--videos", "1")
    assert result.exit_code == 0, result.output
    assert "report.html (" in result.output
    page_html = (out / "report.html").read_text()
    # self-contained: every src and href is a data URI (the page's CSP would block anything else)
    assert not [m for m in re.findall(r"""(?:src|href)=['"]([^'"]*)""", page_html) if not m.startswith("data:")]
    mp4s = sorted((out / "videos").glob("*.mp4"))
    assert 1 <= len(mp4s) <= 3 and page_html.count("<video") == len(mp4s)

    manifest = read_manifest(store, "raw")
    errors, failed, urls = [], [], []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                       headless=True, args=CHROMIUM_FLAGS)
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url[:80]}: {r.failure}"))
            page.on("request", lambda r: urls.append(r.url))
            page.goto((out / "report.html").as_uri(), wait_until="load")
            wait_until(page, "[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)")
            images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
            videos = page.eval_on_selector_all("video", """els => els.map(v => ({ready: v.readyState,
                error: v.error && v.error.code, width: v.videoWidth, height: v.videoHeight, duration: v.duration}))""")
            # and they play: muted videos may start without a user gesture; time must move
            page.evaluate("Promise.all([...document.querySelectorAll('video')].map(v => v.play()))")
            wait_until(page, "[...document.querySelectorAll('video')].every(v => v.currentTime > 0)")
            page.evaluate("[...document.querySelectorAll('video')].forEach(v => { v.pause(); v.currentTime = 0 })")
            rows = page.eval_on_selector_all("#per-task tbody tr", "els => els.map(r => r.cells[0].textContent)")
            text = page.inner_text("body")
            page.wait_for_timeout(300)  # the rewound frames painted
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            context.close()
    print(f"screenshot: {tmp_path / 'report.png'}")
    assert errors == [] and failed == [], (errors, failed)
    assert {u.split(":", 1)[0] for u in urls} <= {"file", "data"}, urls
    assert len(images) == 2 and all(done and width > 0 for done, width in images), images
    assert len(videos) == len(mp4s), videos
    for v in videos:
        assert v["error"] is None and v["ready"] >= 2 and v["width"] > 0 and v["height"] > 0 and v["duration"] > 0, v
    assert sorted(rows) == sorted(manifest.per_task) and len(rows) == len(manifest.per_task)
    # the lineage: the value checkpoint's digest, every shard with its digest, the label set's digest
    for digest in [manifest.value_checkpoint["digest"], manifest.digest, *(s["digest"] for s in manifest.shards)]:
        assert digest in text
    assert all(s["id"] in text for s in manifest.shards)
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_html_report_without_videos_and_its_lineage(labeled, tmp_path):
    store, _ = labeled
    out = tmp_path / "r"
    result = report_with_videos(labeled, out, "--videos", "0", "--bins", "5")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"summary.json", "per_task.csv", "advantage_histogram.csv",
                                              "advantage_histogram.png", "value_curves.csv", "value_curves.png",
                                              "report.html"}
    page = (out / "report.html").read_text()
    m = read_manifest(store, "raw")
    assert page.count("<tr class='task'>") == len(m.per_task) and page.count("<tr class='shard'>") == len(m.shards)
    assert page.count("data:image/png;base64,") == 2 and "<video" not in page
    assert m.value_checkpoint["digest"] in page and all(s["digest"] in page for s in m.shards)
    assert page.count("<td class='l'>demonstrations</td>") == len(m.shards)  # recorded by: no policy
    assert json.loads((out / "summary.json").read_text())["digest"] == m.digest


def test_report_refuses_an_existing_output_and_videos_without_html(labeled, tmp_path):
    from test_bad_input import assert_clean_error, run

    store, _ = labeled
    out = tmp_path / "r"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    for args in (["report", "raw", "--out", str(out)], ["report", "raw", "--out", str(out), "--html"]):
        assert_clean_error(run(store.root, args), args, naming="already exists")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    args = ["report", "raw", "--out", str(tmp_path / "new"), "--videos", "2"]
    assert_clean_error(run(store.root, args), args, naming="--html")
    assert not (tmp_path / "new").exists()
    result = run_cli("report", "raw", "--out", str(out), "--html", "--videos", "0", "--force", root=store.root)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging left beside it


@pytest.mark.slow
def test_html_report_killed_before_it_is_in_place_leaves_the_old_one(labeled, tmp_path):
    store, _ = labeled
    out = tmp_path / "r"
    assert report_with_videos(labeled, out, "--videos", "0").exit_code == 0
    old = directory_digest(out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", FAILPOINT_ENV: "before_rename"}
    proc = subprocess.run([sys.executable, "-m", "recap_data.cli.main", "--root", str(store.root), "report", "raw",
                           "--out", str(out), "--html", "--videos", "0", "--bins", "3", "--force"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert directory_digest(out) == old
    result = run_cli("report", "raw", "--out", str(out), "--html", "--videos", "0", "--force", root=store.root)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the dead writer's staging is cleaned


def test_html_dir_puts_the_page_and_its_videos_apart_from_the_plots(labeled, tmp_path):
    """As the pipeline runs it: --out holds the plots DVC reads, --html-dir the page and its videos."""
    from test_bad_input import assert_clean_error, run

    store, _ = labeled
    out, page_dir = tmp_path / "r", tmp_path / "r-html"
    result = run_cli("report", "raw", "--out", str(out), "--html-dir", str(page_dir), "--videos", "1",
                     root=store.root)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"summary.json", "per_task.csv", "advantage_histogram.csv",
                                              "advantage_histogram.png", "value_curves.csv", "value_curves.png"}
    mp4s = sorted((page_dir / "videos").glob("*.mp4"))
    assert {p.name for p in page_dir.iterdir()} == {"report.html", "videos"} and 1 <= len(mp4s) <= 3
    page = (page_dir / "report.html").read_text()
    assert page.count("data:video/mp4;base64,") == len(mp4s) and page.count("data:image/png;base64,") == 2
    assert f"wrote {page_dir}/report.html ({len(mp4s)} episode videos)" in result.output

    # an existing page directory is refused like an existing report, before anything is written
    again = tmp_path / "again"
    args = ["report", "raw", "--out", str(again), "--html-dir", str(page_dir)]
    assert_clean_error(run(store.root, args), args, naming="already exists")
    args = ["report", "raw", "--out", str(again), "--html-dir", str(again)]
    assert_clean_error(run(store.root, args), args, naming="--html-dir")
    assert not again.exists() and sorted((page_dir / "videos").glob("*.mp4")) == mp4s
