"""``audit.json`` and the self-contained ``audit.html`` (plots and thumbnails inlined as base64).

The HTML references nothing outside itself: no scripts, fonts, styles or images by URL.
Thumbnails are made after the audit for a bounded number of items, re-reading only the
frames they show.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .. import format as fmt
from ..errors import RegdpoError
from ..safe_io import real_dir, write_text_atomic
from ..frames import read_mask, read_rgb
from . import calibration, media
from .calibration import TYPE_COLOURS, type_colour
from .quality import BANDS
from .config import NOT_MEASURED
from .metrics import SCORE_OF
from .runner import SUMMARY_METRICS

THUMB_HEIGHT = 128
METRIC_LABELS = {
    "sharpness_loss_db": "blur: sharpness loss (dB, higher = blurrier)",
    "lowpass_psnr_db": "hallucination: low-pass PSNR (dB, lower = more departure)",
    "lowpass_delta_e": "low-pass colour distance (CIE76 dE)",
    "peak_excess": "flicker: peak excess instability (x GT mean)",
    "instability_ratio": "mean temporal instability / GT's",
    "residual_change_ratio": "frame-to-frame residual change / GT's change",
}
THRESHOLD_FIELDS = {
    "sharpness_loss_db": ("blur", "blur_weak_db", "blur_clear_db"),
    "lowpass_psnr_db": ("hallucination", "hallucination_weak_psnr", "hallucination_clear_psnr"),
    "peak_excess": ("flicker", "flicker_weak_excess", "flicker_clear_excess"),
}


# --------------------------------------------------------------------------- plots


def _png_data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def distribution_plot(doc: dict[str, Any]) -> bytes:
    """Histograms of the main metrics, one colour per negative type, thresholds as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = doc["config"]
    keys = ["sharpness_loss_db", "lowpass_psnr_db", "peak_excess", "instability_ratio"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, key in zip(axes.ravel(), keys):
        for neg_type in fmt.NEG_TYPES:
            vals = [i["metrics"][key] for i in doc["items"] if i["neg_type"] == neg_type and i["metrics"].get(key) is not None]
            if vals:
                ax.hist(vals, bins=30, histtype="step", linewidth=1.8, color=type_colour(neg_type, fmt.NEG_TYPES),
                        label=f"{neg_type} ({len(vals)})")
        if key in THRESHOLD_FIELDS:
            neg_type, weak, clear = THRESHOLD_FIELDS[key]
            ax.axvline(cfg[weak], color=TYPE_COLOURS[neg_type], linestyle="--", linewidth=1, label=f"{neg_type} weak")
            ax.axvline(cfg[clear], color=TYPE_COLOURS[neg_type], linestyle="-", linewidth=1, label=f"{neg_type} clear")
        ax.set_title(METRIC_LABELS[key], fontsize=9)
        ax.set_ylabel("negatives")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return media.figure_png(fig)


def verdict_plot(doc: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = [t for t in fmt.NEG_TYPES if t in doc["summary"]]
    colours = {"clear": "#2ca02c", "weak": "#ffbf00", "none": "#d62728", NOT_MEASURED: "#7f7f7f"}
    fig, ax = plt.subplots(figsize=(6, 2.8))
    left = np.zeros(len(types))
    for verdict in ("clear", "weak", "none", NOT_MEASURED):
        counts = np.array([doc["summary"][t]["verdicts"][verdict] for t in types], dtype=float)
        ax.barh(types, counts, left=left, color=colours[verdict], label=verdict)
        left += counts
    ax.set_xlabel("negatives")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    fig.tight_layout()
    return media.figure_png(fig)


def jump_plot(doc: dict[str, Any], max_lines: int = 200) -> bytes | None:
    """Flicker: excess instability per transition, one line per negative, segment boundaries marked."""
    flicker = [i for i in doc["items"] if i["neg_type"] == "flicker" and i["metrics"].get("excess_per_transition")]
    if not flicker:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = doc["config"]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    boundaries: set[int] = set()
    for item in flicker[:max_lines]:
        curve = [np.nan if v is None else v for v in item["metrics"]["excess_per_transition"]]
        ax.plot(range(1, len(curve) + 1), curve, color=TYPE_COLOURS["flicker"], alpha=0.35, linewidth=1)
        boundaries.update(item["metrics"].get("segment_boundaries") or [])
    for b in sorted(boundaries):
        ax.axvline(b, color="black", linestyle=":", linewidth=1)
    ax.axhline(cfg["flicker_weak_excess"], color="grey", linestyle="--", linewidth=1)
    ax.axhline(cfg["flicker_clear_excess"], color="grey", linestyle="-", linewidth=1)
    ax.set_xlabel("frame the transition lands on (dotted: segment boundaries from meta.json)")
    ax.set_ylabel("excess instability")
    ax.set_title(f"flicker: where the jumps fall ({min(len(flicker), max_lines)} negatives)", fontsize=9)
    fig.tight_layout()
    return media.figure_png(fig)


# --------------------------------------------------------------------------- thumbnails


def _crop_box(hole: np.ndarray, min_size: int = 48) -> tuple[int, int, int, int]:
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    if ys.size == 0:
        return 0, h, 0, w
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = max((y1 - y0) // 4, (min_size - (y1 - y0)) // 2, 4), max((x1 - x0) // 4, (min_size - (x1 - x0)) // 2, 4)
    return max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)


def item_thumbnail(
    root: str | os.PathLike, item: dict[str, Any], video: dict[str, Any], show_invariants: bool = False
) -> tuple[bytes, str] | None:
    """JPEG strip for one item and its caption of the tiles, or None if its frames cannot be read.

    With ``show_invariants`` and a negative that differs outside the hole, the strip shows that
    difference; otherwise the defect (flicker: the two frames of its largest jump).
    """
    root = Path(root)
    name, neg_type = item["video"], item["neg_type"]
    stream = item.get("stream") or neg_type

    def path(stream: str, t: int) -> Path:
        return root / name / stream / fmt.frame_name(t)

    try:
        inv = item.get("invariants", {})
        if show_invariants and inv.get("outside_max_abs_diff"):
            t = int(inv.get("outside_worst_frame", 0))
            gt, neg, hole = _same_size(read_rgb(path(fmt.GT_DIR, t)), read_rgb(path(stream, t)),
                                       read_mask(path(fmt.MASK_DIR, t)))
            diff = np.abs(neg.astype(np.int16) - gt).max(axis=2).astype(np.float32)
            diff[hole] = 0  # only the violation: the hole differs by design and would hide it in the scaling
            # any differing pixel at least mid-grey, however small the difference, dilated to be visible
            diff = np.where(diff > 0, 128 + 127 * diff / max(1.0, float(diff.max())), 0).astype(np.uint8)
            diff = cv2.dilate(diff, np.ones((5, 5), np.uint8))
            diff_rgb = np.stack([diff] * 3, axis=-1)
            tiles = [media.overlay_hole(gt, hole), neg, diff_rgb]
            caption = f"frame {t}: GT + hole | {stream} | where it differs outside the hole (enhanced)"
        elif neg_type == "flicker" and item["metrics"].get("peak_frame"):
            t = int(item["metrics"]["peak_frame"])
            *frames, hole, hole_before = _same_size(
                read_rgb(path(stream, t - 1)), read_rgb(path(stream, t)), read_rgb(path(fmt.GT_DIR, t - 1)),
                read_rgb(path(fmt.GT_DIR, t)), read_mask(path(fmt.MASK_DIR, t)), read_mask(path(fmt.MASK_DIR, t - 1)))
            y0, y1, x0, x1 = _crop_box(hole | hole_before)
            tiles = [frame[y0:y1, x0:x1] for frame in frames]
            caption = f"flicker frames {t - 1}, {t} | GT frames {t - 1}, {t} (crop around the hole)"
        else:
            t = int(video.get("largest_hole_frame", 0))
            gt, neg, hole = _same_size(read_rgb(path(fmt.GT_DIR, t)), read_rgb(path(stream, t)),
                                       read_mask(path(fmt.MASK_DIR, t)))
            y0, y1, x0, x1 = _crop_box(hole)
            tiles = [media.overlay_hole(gt, hole)[y0:y1, x0:x1], gt[y0:y1, x0:x1], neg[y0:y1, x0:x1]]
            caption = f"frame {t}: GT + hole | GT | {stream} (crop around the hole)"
    except (RegdpoError, OSError, ValueError):
        return None
    strip = media.hstack([media.resize_to_height(tile, THUMB_HEIGHT) for tile in tiles])
    return media.encode_jpeg(strip), caption


def _same_size(*images: np.ndarray) -> tuple[np.ndarray, ...]:
    """``images`` unchanged when they share one height x width; ``ValueError`` otherwise (a frame of
    another video linked or copied in: the item has no thumbnail, its audit says what is wrong)."""
    sizes = {image.shape[:2] for image in images}
    if len(sizes) != 1:
        raise ValueError(f"frames of different sizes {sorted(sizes)}")
    return images


def _sort_key(item: dict[str, Any]) -> float:
    """Defect strength: larger = stronger defect (NaN-free: unmeasured items are weakest)."""
    score = item.get("score")
    if score is None:
        return -np.inf
    higher = SCORE_OF.get(item["neg_type"], ("", True))[1]
    return float(score) if higher else -float(score)


def pick_examples(items: Sequence[dict[str, Any]], neg_type: str, k: int) -> tuple[list[dict], list[dict]]:
    """(weakest k, strongest k) negatives of a type by their verdict metric; ties by video name."""
    mine = sorted((i for i in items if i["neg_type"] == neg_type), key=lambda i: (_sort_key(i), i["video"]))
    n_weak = min(k, (len(mine) + 1) // 2)
    n_strong = min(k, len(mine) - n_weak)
    return mine[:n_weak], mine[len(mine) - n_strong :][::-1]


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.2em}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
.clear{color:#1a7f1a;font-weight:bold}.weak{color:#a67c00;font-weight:bold}
.none,.not_measured,.fail{color:#c00;font-weight:bold}
figure{display:inline-block;margin:6px;vertical-align:top;max-width:640px}
figcaption{font-size:12px}
img{image-rendering:auto;max-width:100%}
code{background:#f4f4f4;padding:0 3px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return _e(value)


def render_html(doc: dict[str, Any], root: str | os.PathLike, thumbnails: int = 6) -> str:
    """The whole report as one HTML string (everything inlined)."""
    parts: list[str] = []
    add = parts.append
    cfg = doc["config"]
    n_fail = len(doc["invariant_failures"])
    add("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>")
    add(f"<title>regdpo audit: {_e(doc['root'])}</title><style>{_CSS}</style></head><body>")
    add(f"<h1>regdpo audit</h1><p>Dataset <code>{_e(doc['root'])}</code>: {doc['num_videos']} videos, "
        f"{doc['num_items']} negatives, <span class='{'fail' if n_fail else 'clear'}'>{n_fail} invariant "
        f"failure(s)</span>. A negative passes when it has no invariant failure and its verdict is at least "
        f"<b>{_e(doc['min_verdict'])}</b>.</p>")

    add("<h2 id='summary'>Summary per negative type</h2><table><tr><th class='l'>type</th><th>negatives</th>"
        "<th>clear</th><th>weak</th><th>none</th><th>not measured</th><th>invariant failures</th><th>passing</th>"
        "<th class='l'>verdict metric: p10 / median / p90</th></tr>")
    for neg_type, s in doc["summary"].items():
        st = s["metrics"].get(s["score_metric"]) or {}
        v = s["verdicts"]
        add(f"<tr><td class='l'>{_e(neg_type)}</td><td>{s['count']}</td><td>{v['clear']}</td><td>{v['weak']}</td>"
            f"<td>{v['none']}</td><td>{v[NOT_MEASURED]}</td><td>{s['with_invariant_failures']}</td>"
            f"<td>{s['passing']}</td><td class='l'>{_e(s['score_metric'])}: {_fmt(st.get('p10'))} / "
            f"{_fmt(st.get('median'))} / {_fmt(st.get('p90'))}</td></tr>")
    add("</table>")
    flick = doc["summary"].get("flicker", {}).get("segment_boundaries")
    if flick and flick["boundaries"]:
        add(f"<p>Flicker segment boundaries (from meta.json): {flick['boundaries_with_jump']} of "
            f"{flick['boundaries']} carry a jump; {flick['jumps_off_boundary']} jump(s) fall elsewhere.</p>")

    _calibration_section(add, doc, root, thumbnails)

    add("<h2 id='distributions'>Distributions</h2>")
    add(f"<img alt='verdict counts per type' src='{_png_data_uri(verdict_plot(doc))}'><br>")
    add(f"<img alt='metric distributions per type' src='{_png_data_uri(distribution_plot(doc))}'><br>")
    jumps = jump_plot(doc)
    if jumps is not None:
        add(f"<img alt='flicker jumps per frame' src='{_png_data_uri(jumps)}'>")

    add(f"<h2 id='invariants'>Invariant failures ({n_fail})</h2>")
    if n_fail:
        add("<table><tr><th class='l'>video</th><th class='l'>negative</th><th class='l'>check</th>"
            "<th class='l'>message</th></tr>")
        for f in doc["invariant_failures"]:
            add(f"<tr><td class='l'>{_e(f['video'])}</td><td class='l'>{_e(f.get('stream') or f['neg_type'] or 'all')}</td>"
                f"<td class='l fail'>{_e(f['check'])}</td><td class='l'>{_e(f['message'])}</td></tr>")
        add("</table>")
    else:
        add("<p class='clear'>None: every negative equals its GT outside the hole, differs inside it, and "
            "all streams and masks are well formed.</p>")

    impure = [i for i in doc["items"] if i.get("impure")]
    add(f"<h2 id='impure'>Purity warnings ({len(impure)})</h2>")
    if impure:
        add("<p class='weak'>These negatives clearly show another type's defect as well as their own (a warning: "
            "they still pass). A preference pair should teach one defect; see docs/negatives.md.</p>"
            "<table><tr><th class='l'>video</th><th class='l'>stream</th><th class='l'>also shows</th>"
            + "".join(f"<th>{_e(SCORE_OF[d][0])}</th>" for d in SCORE_OF) + "</tr>")
        for item in impure:
            m = item["metrics"]
            add(f"<tr><td class='l'>{_e(item['video'])}</td><td class='l'>{_e(item['stream'])}</td>"
                f"<td class='l weak'>{_e(', '.join(item['impure']))}</td>"
                + "".join(f"<td>{_fmt(m.get(SCORE_OF[d][0]))}</td>" for d in SCORE_OF) + "</tr>")
        add("</table>")
    else:
        add("<p class='clear'>None: no negative clearly shows another type's defect.</p>")

    videos = {v["name"]: v for v in doc["videos"]}
    if thumbnails > 0:
        failing = [i for i in doc["items"] if i["failures"] and i.get("invariants")][:thumbnails * 2]
        if failing:
            add("<h3>Examples of invariant failures</h3>")
            for item in failing:
                add(_thumb_figure(root, item, videos, "; ".join(f["check"] for f in item["failures"]), True))
        for neg_type in doc["summary"]:
            weakest, strongest = pick_examples(doc["items"], neg_type, thumbnails)
            metric = SCORE_OF.get(neg_type, ("score",))[0]
            add(f"<h2 id='examples-{_e(neg_type)}'>{_e(neg_type)}: weakest and failing examples</h2>")
            for item in weakest:
                add(_thumb_figure(root, item, videos, f"{metric} = {_fmt(item['score'])}"))
            add(f"<h3>{_e(neg_type)}: strongest examples</h3>")
            for item in strongest:
                add(_thumb_figure(root, item, videos, f"{metric} = {_fmt(item['score'])}"))

    add("<h2 id='thresholds'>Thresholds and settings</h2><table><tr><th class='l'>setting</th><th>value</th></tr>")
    for key, value in cfg.items():
        add(f"<tr><td class='l'><code>--{_e(key.replace('_', '-'))}</code></td><td>{_fmt(value)}</td></tr>")
    add("</table>")

    add(f"<h2 id='items'>All negatives ({doc['num_items']})</h2><details><summary>show table</summary><table>"
        "<tr><th class='l'>video</th><th class='l'>stream</th><th class='l'>verdict</th><th>passes</th>"
        "<th>quality score</th><th class='l'>band</th><th class='l'>impure</th>"
        + "".join(f"<th>{_e(k)}</th>" for k in SUMMARY_METRICS) + "<th class='l'>jump frames</th></tr>")
    for item in doc["items"]:
        m = item["metrics"]
        add(f"<tr><td class='l'>{_e(item['video'])}</td><td class='l'>{_e(item.get('stream', item['neg_type']))}</td>"
            f"<td class='l {_e(item['verdict'])}'>{_e(item['verdict'])}</td><td>{'yes' if item['passes'] else 'no'}</td>"
            f"<td>{_fmt(item.get('quality_score'))}</td><td class='l'>{_e(item.get('band') or '-')}</td>"
            f"<td class='l'>{_e(', '.join(item.get('impure') or []) or '-')}</td>"
            + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in SUMMARY_METRICS)
            + f"<td class='l'>{_e(m.get('jump_frames', ''))}</td></tr>")
    add("</table></details></body></html>\n")
    return "".join(parts)


def _calibration_section(add: Any, doc: dict[str, Any], root: str | os.PathLike, thumbnails: int) -> None:
    """Quality-score histograms with the band, type x strength x band table, mask areas, examples per band."""
    band = doc.get("band") or [0.30, 0.65]
    items = doc["items"]
    add(f"<h2 id='calibration'>Calibration: how hard the negatives are</h2><p>Quality score in [0, 1] (1 = as good "
        f"as the GT; formula in docs/audit.md). Eligible band <b>{band[0]:g} - {band[1]:g}</b> (<code>--band</code>): "
        "<code>regdpo select</code> keeps, per source clip, eligible negatives closest to its target.</p>")
    hist = calibration.quality_histogram_plot(items, band)
    if hist is not None:
        add(f"<img alt='quality score per type with the band' src='{_png_data_uri(hist)}'><br>")
    rows = calibration.band_table(items)
    by_round = any("round" in row for row in rows)
    add("<table id='band-table'><tr><th class='l'>type</th><th>strength</th>" + ("<th>round</th>" if by_round else "")
        + "<th>negatives</th><th>mean quality score</th>" + "".join(f"<th>{_e(b)}</th>" for b in BANDS) + "</tr>")
    for row in rows:
        cells = "".join(
            f"<td>{row['bands'][b]} ({_fmt(None if row['shares'][b] is None else round(100 * row['shares'][b]))} %)</td>"
            for b in BANDS)
        rnd = (f"<td>{_e('-' if row['round'] is None else row['round'])}</td>" if by_round else "")
        add(f"<tr><td class='l'>{_e(row['neg_type'])}</td><td>{row['strength']:.2f}</td>{rnd}<td>{row['count']}</td>"
            f"<td>{_fmt(row['mean_quality_score'])}</td>{cells}</tr>")
    add("</table>")
    areas = calibration.mask_area_plot(doc["videos"])
    if areas is not None:
        fractions = [100 * v["hole_fraction"] for v in doc["videos"] if v.get("hole_fraction") is not None]
        add(f"<h3 id='mask-area'>Mask area</h3><p>Mean hole area per video: median {np.median(fractions):.1f} %, "
            f"range {min(fractions):.1f} - {max(fractions):.1f} %.</p>"
            f"<img alt='mask area distribution' src='{_png_data_uri(areas)}'><br>")
    if thumbnails <= 0:
        return
    videos = {v["name"]: v for v in doc["videos"]}
    k = max(1, min(3, thumbnails // 2))
    for name, (lowest, highest) in calibration.band_examples(items, k).items():
        add(f"<h3 id='band-{_e(name)}'>{_e(name)}: weakest and strongest examples</h3>")
        if not lowest:
            add("<p>none</p>")
        for item in lowest + highest:
            add(_thumb_figure(root, item, videos, f"quality score {_fmt(item['quality_score'])}"))


def _thumb_figure(
    root: str | os.PathLike, item: dict[str, Any], videos: dict[str, Any], detail: str, show_invariants: bool = False
) -> str:
    thumb = item_thumbnail(root, item, videos.get(item["video"], {}), show_invariants)
    head = (f"<b>{_e(item['video'])}</b> / {_e(item.get('stream', item['neg_type']))}: "
            f"<span class='{_e(item['verdict'])}'>{_e(item['verdict'])}</span>, {_e(detail)}")
    if item.get("note"):
        head += f" ({_e(item['note'])})"
    if thumb is None:
        return f"<figure><figcaption>{head}<br>(frames unreadable)</figcaption></figure>"
    data, caption = thumb
    return (f"<figure><img alt='{_e(item['video'])} {_e(item['neg_type'])}' "
            f"src='{_png_data_uri(data, 'image/jpeg')}'><figcaption>{head}<br>{_e(caption)}</figcaption></figure>")


def write_report(doc: dict[str, Any], root: str | os.PathLike, out_dir: str | os.PathLike,
                 html_report: bool = True, thumbnails: int = 6) -> list[Path]:
    """Write ``audit.json`` (and ``audit.html``) into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    real_dir(out_dir)
    written = [out_dir / fmt.AUDIT_JSON]
    fmt.write_json_atomic(written[0], doc)
    if html_report:
        path = out_dir / fmt.AUDIT_HTML
        write_text_atomic(path, render_html(doc, root, thumbnails))
        written.append(path)
    return written

