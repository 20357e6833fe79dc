"""The report page: one self-contained HTML file (inline CSS, images as base64 data URIs, no links out)."""

from __future__ import annotations

import base64
import json
from html import escape

from distill.report.data import RunData

SECTIONS = {
    "quality": "Quality against dimension",
    "bytes": "Bytes per vector: neighbours kept against storage",
    "training": "Training curves",
    "heatmaps": "Cosine similarity of tokens, prefix by prefix",
    "projection": "Token map: 2-D projections of token embeddings (PCA, t-SNE)",
    "neighbours": "Neighbours that changed most",
    "run": "Run: config, teacher, sizes, speeds",
}

_CAPTIONS = {
    "quality": "Each prefix of the student (red) against the teacher cut to the same number of dimensions "
               "(blue): the baseline a Matryoshka student has to beat. Overlap@10 is the share of each item's "
               "10 nearest neighbours under the full teacher that are kept.",
    "training": "The total loss, then each loss term with one line per prefix size (from metrics.jsonl); "
                "dashed orange lines mark the steps after which a growing student (--grow-at) doubled its depth.",
    "heatmaps": "Pairwise cosine similarity of the token set, ordered by group (lines separate groups): "
                "teacher (PCA-rotated, cut to d dims) beside the student's first d dims.",
    "bytes": "Overlap@10 with the full teacher's neighbours on the run's held-out texts, for every prefix size "
             "of the student (red) and of the teacher's PCA-rotated vectors (blue: the baseline, also at the "
             "teacher's full width), each stored as float32 (4 bytes a dim), int8 (1 byte a dim) or binary "
             "(1 bit a dim, Hamming search), against the bytes one stored vector takes (log scale). Points above "
             "the same x cost the same storage: 256-dim binary takes 32 bytes, as 8-dim float32 does. The rows "
             "are also in report-bytes.json beside this page.",
    "projection": "",  # written per run by _map_caption
}
_FIGURES = {"projection": ("projection", "tsne")}  # sections with more than their own figure

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1240px;
       padding: 16px 24px; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
nav a { margin-right: 1em; color: #1f5fa8; text-decoration: none; font-size: 0.9em; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
img.narrow { max-width: 900px; }
p.caption { color: #555; font-size: 0.9em; margin: 4px 0 8px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.lost { color: #b22; text-decoration: line-through; }
.gained { color: #176d2c; }
.kpi { display: inline-block; border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; margin: 0 8px 8px 0; }
.kpi b { display: block; font-size: 1.2em; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin: 0 4px 0 10px; }
pre { background: #f7f7f7; padding: 8px; font-size: 0.8em; overflow-x: auto; }
"""


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    narrow = ' class="narrow"' if name == "heatmaps" else ""  # tall: one row of two maps per prefix size
    return f'<img alt="{escape(name)}"{narrow} src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _quality_table(data: RunData) -> str:
    s, rows = data.summary, []
    for d in data.dims:
        key = str(d)
        row = [str(d)]
        sts, held = s.get("sts", {}), s.get("holdout", {})
        for block in (sts.get("student", {}), sts.get("teacher_rotated", {}), sts.get("teacher", {})):
            row.append(f"{block[key]['spearman']:.1f}" if key in block else "–")
        for block in (held.get("student", {}), held.get("teacher_rotated", {}), held.get("teacher_truncated", {})):
            row.append(f"{block[key]['overlap@10']:.3f}" if key in block else "–")
        rows.append(row)
    return _table(["dims", "STS Spearman: student", "teacher, PCA-rotated prefix", "teacher, raw dims cut",
                   "overlap@10: student", "teacher, PCA-rotated prefix", "teacher, raw dims cut"], rows)


def _bytes_table(data: RunData) -> str:
    result = data.bytes_rows
    if not result:
        return ""
    by_key = {(r["model"], r["dim"], r["precision"]): r for r in result["rows"]}
    keys = sorted({(r["bytes_per_vector"], r["dim"], r["precision"]) for r in result["rows"]})
    rows = []
    for size, d, precision in keys:
        cells = [f"{by_key[(m, d, precision)]['overlap']:.3f}" if (m, d, precision) in by_key else "–"
                 for m in ("student", "teacher_rotated")]
        rows.append([f"{size:,}", str(d), precision, *cells])
    return _table(["bytes per vector", "dims", "precision", f"overlap@{result['k']}: student",
                   "teacher, PCA-rotated prefix"], rows, numeric_from=3)


def _map_caption(data: RunData) -> str:
    from distill.report.maps import N_LABELS, tsne_perplexity

    n = len(data.token_map.strings) if data.token_map is not None else 0
    return (f"Tokens of {data.map_source}, coloured by group (12 colours at most; further groups grey): PCA, "
            f"then t-SNE (seeded, so the same picture every time; perplexity {tsne_perplexity(n):.1f} for "
            f"{n:,} tokens), of the teacher (PCA-rotated, full width) beside the student at full width and at its "
            f"smallest prefix. Maps of more than 150 tokens name {N_LABELS} of them. In t-SNE, clusters are "
            f"meaningful, the distances between them are not.")


def _legend(data: RunData) -> str:
    from distill.report.maps import legend_entries

    if data.token_map is None:
        return ""
    spans = "".join(f'<span class="swatch" style="background:{color}"></span>{escape(name)} ({n:,})'
                    for name, color, n in legend_entries(data.token_map.groups))
    return f'<p class="legend">Groups (tokens): {spans}</p>'


def _neighbours(data: RunData) -> str:
    space = data.token_space
    if not space:
        return "<p>No cached vocabulary targets of the teacher were found, so token neighbours were not compared.</p>"
    examples = space["examples"]  # one entry per prefix size, the same queries in each
    if not examples or not examples[0]["queries"]:
        return "<p>No sample queries.</p>"
    by_dim = {ex["dim"]: ex["queries"] for ex in examples}
    smallest = min(by_dim)
    order = sorted(range(len(by_dim[smallest])), key=lambda i: (-len(by_dim[smallest][i]["lost"]), i))[:8]
    dims = sorted(by_dim)
    header = ["query", "teacher's 10 nearest"] + [f"student @ {d}: −lost +gained" for d in dims]
    rows = []
    for i in order:
        q = by_dim[smallest][i]
        cells = [f"<b>{escape(q['text'])}</b>", escape(", ".join(q["teacher"]))]
        for d in dims:
            qd = by_dim[d][i]
            kept = 10 - len(qd["lost"])
            lost = " ".join(f'<span class="lost">{escape(w)}</span>' for w in qd["lost"])
            gained = " ".join(f'<span class="gained">{escape(w)}</span>' for w in qd["gained"])
            cells.append(f"{kept}/10 kept<br>{lost}<br>{gained}")
        rows.append(cells)
    intro = (f"<p class=\"caption\">Nearest neighbours among {space['n_tokens']:,} sampled word tokens of the "
             f"vocabulary under the full teacher, and what each student prefix lost (red) and gained (green). "
             f"Of {len(by_dim[smallest])} sample queries, the {len(order)} that changed most at {smallest} dims.</p>")
    return intro + _table(header, rows, numeric_from=99)


def _run_section(data: RunData) -> str:
    s, c = data.summary, data.config
    teacher = s.get("teacher", {})
    kpis = [("teacher", f"{teacher.get('name', c.get('teacher'))} ({teacher.get('dim', '?')} dims)"),
            ("student", f"{s.get('student', c.get('student'))}, dims {', '.join(map(str, data.dims))}"),
            ("texts", f"{s.get('train_texts', 0):,} train / {s.get('holdout_texts', 0):,} held out")]
    kpis += list(data.facts.items())
    if s.get("train", {}).get("steps"):  # a run with 0 steps (epochs 0) has no losses to show
        kpis.append(("loss", f"{s['train'].get('first_loss', 0):.4f} → {s['train'].get('final_loss', 0):.4f} "
                             f"in {s['train'].get('steps', 0)} steps"))
    html = "".join(f'<div class="kpi">{escape(k)}<b>{escape(str(v))}</b></div>' for k, v in kpis)
    html += "<h3>config.json</h3><pre>" + escape(json.dumps(c, indent=2)) + "</pre>"
    html += "<h3>teacher identity</h3><pre>" + escape(json.dumps(teacher, indent=2)) + "</pre>"
    return html


def render(data: RunData, figures: dict[str, bytes]) -> str:
    """The whole page as one string."""
    title = f"distill report: {data.run_dir.name}"
    teacher = data.summary.get("teacher", {}).get("name", data.config.get("teacher", "?"))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f"<p class=\"sub\">{escape(data.summary.get('student', '?'))} student of {escape(str(teacher))}, "
             f"prefix sizes {', '.join(map(str, data.dims))}</p>",
             "<nav>" + "".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in SECTIONS.items()) + "</nav>"]
    if data.summary.get("note"):  # e.g. a run without texts: teacher and student curves coincide, and why
        parts.append(f'<p class="note"><strong>Note:</strong> {escape(data.summary["note"])}</p>')
    for key, heading in SECTIONS.items():
        parts.append(f'<section id="{key}"><h2>{escape(heading)}</h2>')
        if key in _CAPTIONS:
            caption = _map_caption(data) if key == "projection" else _CAPTIONS[key]
            parts.append(f'<p class="caption">{escape(caption)}</p>')
        shown = [name for name in _FIGURES.get(key, (key,)) if name in figures]
        parts += [_img(name, figures[name]) for name in shown]
        if not shown and key in _CAPTIONS:
            parts.append("<p>Not available for this run.</p>")
        if key == "quality":
            parts.append(_quality_table(data))
        elif key == "bytes":
            parts.append(_bytes_table(data))
        elif key == "projection" and shown:
            parts.append(_legend(data))
        elif key == "neighbours":
            parts.append(_neighbours(data))
        elif key == "run":
            parts.append(_run_section(data))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
