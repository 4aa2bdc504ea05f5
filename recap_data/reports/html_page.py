"""report.html: a label set's report as one self-contained page (`recap-data report LABELS --html`).

The page holds the per-task table, the advantage histograms and value curves (the report's PNGs),
the videos of a few selected episodes (mp4 from recap_data.reports.view) and the label set's
lineage (value checkpoint, shards and their digests, parent, params). Plots and videos are
embedded as base64 data URIs and the CSS is inline: the file opens anywhere, offline, alone, and
its Content-Security-Policy forbids every request that is not to a data URI, so a page that
would reach out is a page that fails to show, not one that leaks.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from recap_data.store.label_sets import LabelManifest

CSP = ("default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'")
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #222 }
h1 { font-size: 22px; margin-bottom: 2px } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd }
.sub { color: #666; margin-top: 0 }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top }
th { background: #f4f4f4 } td.l, th.l { text-align: left }
code { font-size: 12px; word-break: break-all }
img.plot { max-width: 100%; border: 1px solid #eee }
.videos { display: flex; flex-wrap: wrap; gap: 16px }
figure { margin: 0; max-width: 560px } figcaption { font-size: 12px; color: #444 }
video { max-width: 100%; background: #000 }
.ok { color: #228833 } .fail { color: #cc3311 } .note { color: #666; font-size: 12px }
"""
TASK_COLUMNS = [("episodes", "episodes", "d"), ("frames", "frames", "d"), ("epsilon", "epsilon", ".4f"),
                ("positive_fraction", "positive", ".3f"), ("target", "target", ".2f"),
                ("advantage_q05", "q05", ".4f"), ("advantage_q25", "q25", ".4f"), ("advantage_q50", "median", ".4f"),
                ("advantage_q75", "q75", ".4f"), ("advantage_q95", "q95", ".4f"),
                ("start_value_success", "V(o_0) success", ".3f"), ("start_value_failure", "V(o_0) failure", ".3f")]


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, fmt: str) -> str:
    if value is None or value != value:  # None or NaN: a task without successes or without failures
        return "-"
    return format(int(value) if fmt == "d" else float(value), "," if fmt == "d" else fmt)


def _params(params: dict) -> str:
    return ", ".join(f"{_e(k)}=<code>{_e(v)}</code>" for k, v in sorted(params.items())) or "-"


def task_table(per_task: dict) -> str:
    head = "".join(f"<th>{_e(title)}</th>" for _, title, _ in TASK_COLUMNS)
    rows = "".join(
        f"<tr class='task'><td class='l'>{_e(task)}</td>"
        + "".join(f"<td>{_num(row.get(key), fmt)}</td>" for key, _, fmt in TASK_COLUMNS) + "</tr>"
        for task, row in per_task.items())
    return (f"<table id='per-task'><thead><tr><th class='l'>task</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def recorded_by(policy: dict | None) -> str:
    """Who recorded a shard: the policy's family, path and digest, from its manifest's source."""
    if not policy:
        return "demonstrations"
    if not policy.get("digest"):
        return f"<code>{_e(policy.get('path'))}</code>"
    return (f"{_e(policy.get('type') or 'pi0')} <code>{_e(policy.get('path'))}</code> "
            f"(<code>{_e(str(policy['digest'])[:12])}</code>)")


def lineage(manifest: LabelManifest, policies: dict[str, dict | None] | None = None) -> str:
    """The label set's facts and its shards; `policies`: shard id -> the manifest's source.policy."""
    policies = policies or {}
    ckpt = manifest.value_checkpoint or {}
    sources = (manifest.parent or {}).get("sources") or ([manifest.parent] if manifest.parent else [])
    parent = ", ".join(f"<code>{_e(p.get('name'))}</code> (<code>{_e(p.get('digest'))}</code>)" for p in sources)
    reuse = "their values, one threshold per task over all of them" if len(sources) > 1 else "its values"
    parent = f"{parent}: this set reuses {reuse}" if sources else "none (values computed by the model)"
    facts = [("label set", f"<code>{_e(manifest.name)}</code>"), ("digest", f"<code>{_e(manifest.digest)}</code>"),
             ("created", _e(manifest.created_at)), ("format", f"<code>{_e(manifest.format)}</code>"),
             ("frames", _num(manifest.frames, "d")), ("table parts", _num(len(manifest.parts), "d")),
             ("value checkpoint", f"<code>{_e(ckpt.get('path', '-'))}</code>"),
             ("checkpoint digest", f"<code>{_e(ckpt.get('digest', '-'))}</code>"),
             ("parent", parent), ("advantage params", _params(manifest.advantage)),
             ("reward params", _params(manifest.reward)), ("value pass", _params(manifest.label))]
    facts_html = "".join(f"<tr><th class='l'>{k}</th><td class='l'>{v}</td></tr>" for k, v in facts)
    shards = "".join(f"<tr class='shard'><td class='l'><code>{_e(s['id'])}</code></td>"
                     f"<td class='l'><code>{_e(s.get('digest', '-'))}</code></td>"
                     f"<td class='l'>{recorded_by(policies.get(s['id']))}</td>"
                     f"<td>{_num(s.get('episodes'), 'd')}</td><td>{_num(s.get('frames'), 'd')}</td></tr>"
                     for s in manifest.shards)
    return (f"<table id='lineage'>{facts_html}</table>"
            "<table id='shards'><thead><tr><th class='l'>shard</th><th class='l'>digest (checked unchanged)</th>"
            "<th class='l'>recorded by</th><th>episodes</th><th>frames</th></tr></thead>"
            f"<tbody>{shards}</tbody></table>")


def video_figure(video: dict) -> str:
    """One selected episode: its mp4 (embedded) and a caption of why it was chosen and what it is."""
    ok = video.get("success")
    outcome = "outcome unknown" if ok is None else \
        "<span class='ok'>success</span>" if ok else "<span class='fail'>failure</span>"
    facts = [f"{_num(video['length'], 'd')} frames" if "length" in video else None,
             f"mean advantage {_num(video['mean_advantage'], '.4f')}" if "mean_advantage" in video else None,
             f"V(o_0) {_num(video['start_value'], '.3f')}" if "start_value" in video else None,
             f"actual return {_num(video['start_return'], '.3f')}" if "start_return" in video else None,
             f"{_e(video['codec'])} {video.get('width')}x{video.get('height')}" if "codec" in video else None]
    caption = (f"<b>{_e(video.get('why') or 'selected')}</b>: <code>{_e(video['shard'])}:{_e(video['episode_index'])}"
               f"</code>, {outcome}, " + ", ".join(f for f in facts if f) + f"<br>{_e(video.get('task', ''))}")
    return (f"<figure><video controls muted loop playsinline preload='auto'>"
            f"<source src='{data_uri(video['mp4'], 'video/mp4')}' type='video/mp4'></video>"
            f"<figcaption>{caption}</figcaption></figure>")


def render_html(result: dict, manifest: LabelManifest, plots: dict[str, Path], videos: list[dict],
                videos_note: str = "", policies: dict[str, dict | None] | None = None) -> str:
    """The page. `plots`: title -> PNG file; `videos`: selection dicts with an `mp4` path and a `why`;
    `policies`: shard id -> the policy that recorded it (its manifest's source.policy)."""
    name = result["label_set"]
    plots_html = "".join(f"<h3>{_e(title)}</h3><img class='plot' alt='{_e(title)}' src='{data_uri(png, 'image/png')}'>"
                         for title, png in plots.items())
    videos_html = (f"<div class='videos'>{''.join(video_figure(v) for v in videos)}</div>" if videos
                   else "<p class='note'>No episode videos in this report (<code>--videos 0</code>).</p>")
    threshold = result.get("threshold", manifest.advantage.get("threshold", ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recap-data report: {_e(name)}</title><style>{CSS}</style></head>
<body>
<h1>Label set <code>{_e(name)}</code></h1>
<p class="sub">{_num(result['frames'], 'd')} frames, {_num(result['positive_fraction'], '.3f')} positive overall
(target {_num(manifest.advantage.get('positive_fraction'), '.2f')}, threshold {_e(threshold)}), digest
<code>{_e(manifest.digest[:23])}</code></p>
<h2>Per task</h2>
<p class="note">epsilon: the task's advantage threshold; positive: the realised fraction of frames with advantage &gt;
epsilon (the indicator); q05 to q95: advantage quantiles; V(o_0): mean value at the first frame of successful and
failed episodes.</p>
{task_table(result['per_task'])}
<h2>Plots</h2>
{plots_html}
<h2>Episodes</h2>
<p class="note">{_e(videos_note)}</p>
{videos_html}
<h2>Lineage</h2>
{lineage(manifest, policies)}
<p class="note">Written by <code>recap-data report {_e(name)} --html</code>; self-contained: plots and videos
are embedded.</p>
</body></html>
"""
