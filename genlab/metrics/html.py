"""A self-contained HTML page of an evaluation: the numbers with their features and sample counts, and the
pictures (embedded, so the page can be mailed or moved on its own)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from genlab.rundir import atomic_write_text

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.note { color: #666; font-size: 90%; }
"""

_CAPTIONS = {
    "samples": "Samples, captioned with the prompt, or with the class asked -> the class judged",
    "coverage": "Mode coverage: predicted classes of the samples",
    "memorization": "Memorization: the samples closest to a training image, beside that image",
    "sweep": "FID against sampling steps and model evaluations, per sampler",
    "training": "Training curve",
    "guidance": "Fidelity against diversity (recall, FID) per kind of guidance, points labelled by scale",
    "attention": "Cross-attention maps: where each token of the prompt acts (averaged over steps and layers)",
    "adherence": "Samples for held-out single-object prompts (adherence is read back from these pixels)",
    "paraphrases": "The same scenes in phrasings held out of training, from the same seeds",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _metric_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, computed on, images) for every metric present in ``report``."""
    rows = []
    if "adherence" in report:
        a = report["adherence"]
        parts = ", ".join(f"{k} {v:.0%}" for k, v in a["per_attribute"].items())
        value = f"{a['all']:.1%} all attributes right ({parts})"
        rows.append(
            ("prompt adherence", value, "scene read back from the pixels", f"{a['checked']} generated")
        )
    if "adherence_paraphrase" in report:
        a = report["adherence_paraphrase"]
        parts = ", ".join(f"{k} {v:.0%}" for k, v in a["per_attribute"].items())
        value = f"{a['all']:.1%} all attributes right ({parts})"
        checked = f"{a['checked']} generated"
        rows.append(("adherence, held-out phrasings", value, "the same scenes, other words", checked))
    if "clip" in report:
        c = report["clip"]
        value = f"{c['value']:.2f} (mismatched prompts {c['mismatched']:.2f})"
        rows.append(("CLIP score", value, "the CLIP run given with --clip", f"{c['generated']} generated"))
    if "accuracy" in report:
        a = report["accuracy"]
        rows.append(("classifier accuracy", f"{a['value']:.1%}", a["judge"], f"{a['generated']} generated"))
    if "fid" in report:
        f = report["fid"]
        images = f"{f['real']} real val / {f['generated']} generated"
        rows.append(("FID", _fmt(f["value"]), f["features"], images))
        if "floor_real_train" in f:
            rows.append(("FID floor (real train vs val)", _fmt(f["floor_real_train"]), f["features"], images))
    if "kid" in report:
        k = report["kid"]
        rows.append(
            (
                "KID",
                f"{k['value']:.4g} &plusmn; {k['std']:.2g}",
                k["features"],
                f"{k['real']} real / {k['generated']} generated",
            )
        )
    if "pr" in report:
        p = report["pr"]
        value = f"precision {p['precision']:.3f}, recall {p['recall']:.3f} (k={p['k']})"
        rows.append(
            ("precision / recall", value, p["features"], f"{p['real']} real / {p['generated']} generated")
        )
    if "coverage" in report:
        c = report["coverage"]
        value = (
            f"{c['modes_covered']}/{c['num_classes']} modes, normalized entropy {c['normalized_entropy']:.3f}"
        )
        rows.append(("mode coverage", value, c["judge"], f"{sum(c['histogram'])} generated"))
    if "memorization" in report:
        m = report["memorization"]
        value = (
            f"median nearest-training distance {m['median_distance']:.2f} "
            f"(held-out real images: {m['held_out_median_distance']:.2f})"
        )
        rows.append(
            ("memorization", value, m["pixels"], f"{m['generated']} generated / {m['training']} train")
        )
    return rows


def write_report(path: str | Path, report: dict[str, Any], title: str = "genlab evaluation") -> Path:
    """Write ``report`` (from evaluate_generator) as one HTML file; its pictures, named in
    ``report['pictures']`` relative to the page's folder, are embedded as base64 PNG."""
    path = Path(path)
    settings = ", ".join(
        f"{k} {_fmt(report[k])}"
        for k in ("sampler", "steps", "nfe", "guidance_scale", "seed", "n")
        if k in report
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Run <code>{html.escape(str(report.get('run', '')))}</code>; sampling: {settings}.</p>",
    ]
    if report.get("features"):
        parts.append(
            f"<p class='note'>Features for FID/KID/precision-recall: {html.escape(report['features'])}. "
            "Numbers compare runs scored on the same features and sample counts, not papers.</p>"
        )
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>computed on</th><th>images</th></tr>"
    )
    for name, value, on, images in _metric_rows(report):
        parts.append(
            f"<tr><td>{name}</td><td>{value}</td><td>{html.escape(str(on))}</td><td>{images}</td></tr>"
        )
    parts.append("</table>")
    if report.get("accuracy", {}).get("per_class"):
        per = report["accuracy"]["per_class"]
        parts.append(
            "<table><tr><th>class</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in per) + "</tr>"
        )
        parts.append(
            "<tr><td>accuracy</td>" + "".join(f"<td>{v:.0%}</td>" for v in per.values()) + "</tr></table>"
        )
    if report.get("sweep"):
        keys = ["sampler", "steps", "nfe", "fid"] + (["accuracy"] if "accuracy" in report["sweep"][0] else [])
        keys.append("seconds")
        parts.append("<h2>Sampler sweep</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>")
        for row in report["sweep"]:
            parts.append("<tr>" + "".join(f"<td>{_fmt(row[k])}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
    if report.get("guidance"):
        keys = ["guidance", "scale"] + [
            k for k in ("fidelity", "fid", "precision", "recall", "seconds") if k in report["guidance"][0]
        ]
        parts.append("<h2>Guidance sweep</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>")
        for row in report["guidance"]:
            parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row[k]))}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
    for key, name in report.get("pictures", {}).items():
        picture = path.parent / name
        if not picture.is_file():
            continue
        data = base64.b64encode(picture.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(_CAPTIONS.get(key, key))}</h2>")
        parts.append(f"<img alt='{html.escape(key)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
