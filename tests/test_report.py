"""The report of a tiny run: every section, every image decodes, nothing points outside the page."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.hierarchy.tree import Group, Hierarchy, Level
from distill.index.compare import compare_precisions
from distill.index.search import normalize_prefix
from distill.pipeline.run import RunConfig, run
from distill.pipeline.targets import TargetView
from distill.pipeline.train import TrainConfig
from distill.report import BYTES_NAME, maps, write_report
from distill.report.data import load_run, read_groups, term_series
from distill.report.html import SECTIONS, render
from distill.report.maps import OTHER, PALETTE, legend_entries, tsne_2d, tsne_perplexity
from distill.students import load_student

_DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert_dir, tiny_corpus, tiny_texts):
    root = tmp_path_factory.mktemp("report-run")
    sts = root / "sts.jsonl"
    sts.write_text("\n".join(json.dumps({"sentence1": tiny_texts[i], "sentence2": tiny_texts[i + 1],
                                         "score": float(i % 5)}) for i in range(0, 40, 2)))
    cfg = RunConfig(out=str(root / "run"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    dims=(8, 16, 32), targets_dir=str(root / "targets"), sts=str(sts),
                    train=TrainConfig(epochs=2, batch_size=32, log_every=1))
    run(cfg)
    page = write_report(cfg.out)
    return page, page.read_text(encoding="utf-8")


def test_report_has_every_section_and_every_image_decodes(tiny_run):
    page, html = tiny_run
    assert page.name == "report.html"
    # the eval stage's speed, not timed again
    assert "against the teacher&#x27;s" in html or "against the teacher's" in html
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">' in html and heading in html
    images = _DATA_URI.findall(html)
    assert len(images) == 6  # quality, bytes, training, heatmaps, projection (PCA), tsne
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    pngs = sorted(page.parent.glob("report-*.png"))
    assert [p.stem for p in pngs] == ["report-bytes", "report-heatmaps", "report-projection", "report-quality",
                                      "report-training", "report-tsne"]
    assert sorted(base64.b64encode(p.read_bytes()).decode() for p in pngs) == sorted(images)  # the same figures


def test_report_holds_no_external_url(tiny_run):
    _, html = tiny_run
    assert not re.search(r"https?:|ftp:|url\(", html)  # ':' is not a base64 character, so this scans it all
    assert "http" not in _DATA_URI.sub("", html)  # a plain grep of the page's text finds nothing
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'src="([^"]*)"', html))
    assert all(v.startswith("#") for v in re.findall(r'href="([^"]*)"', html))
    assert "<script" not in html and "<link" not in html


def test_report_shows_the_runs_numbers(tiny_run):
    page, html = tiny_run
    summary = json.loads((page.parent / "summary.json").read_text())
    assert summary["teacher"]["name"] in html
    for d in (8, 16, 32):
        assert f"<td>{d}</td>" in html  # a row of the quality table per prefix size
        assert f"{summary['sts']['student'][str(d)]['spearman']:.1f}" in html
    assert "kept" in html and 'class="lost"' in html  # the neighbour table has rows
    # the baseline is the teacher's rotated prefixes (what the student is trained on); the raw cut is shown apart
    assert "teacher, PCA-rotated prefix" in html and "teacher, raw dims cut" in html
    rotated, raw = summary["sts"]["teacher_rotated"], summary["sts"]["teacher"]
    assert rotated["32"]["spearman"] == pytest.approx(raw["32"]["spearman"], abs=1e-3)  # full width: same cosines
    assert rotated["8"]["spearman"] != pytest.approx(raw["8"]["spearman"], abs=1e-3)
    assert f"{rotated['8']['spearman']:.1f}" in html
    metrics = [json.loads(ln) for ln in (page.parent / "metrics.jsonl").read_text().splitlines()]
    terms = term_series(metrics)
    assert set(terms) >= {"mse", "cos", "rel"} and set(terms["mse"]) == {8, 16, 32}
    assert len(terms["mse"][8][0]) == len(metrics)


def test_plot_command_with_user_groups(tiny_run, tmp_path):
    page, _ = tiny_run
    groups = tmp_path / "groups.txt"
    groups.write_text("# my groups\nanimals: cat dog bird\nplaces: river city market garden\n")
    assert read_groups(groups) == {"animals": ["cat", "dog", "bird"], "places": ["river", "city", "market", "garden"]}
    result = CliRunner().invoke(app, ["plot", str(page.parent), "--groups", str(groups), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert len(_DATA_URI.findall(html)) == 6
    missing = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert missing.exit_code == 2 and "no finished run" in missing.output
    with pytest.raises(DistillError, match="fewer than two"):
        write_report(page.parent, groups={"none": ["zzzz", "qqqq"]}, out=tmp_path / "x")


def test_tsne_is_seeded_and_its_panel_is_in_the_page(tiny_run):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 16))
    x = (np.repeat(centres, 30, axis=0) + 0.3 * rng.standard_normal((60, 16))).astype(np.float32)  # 2 clusters
    a, b = tsne_2d(x, seed=0), tsne_2d(x, seed=0)
    assert a.shape == (60, 2) and np.array_equal(a, b)  # same seed, same array, bit for bit
    nearest = np.argsort(((a[:, None] - a[None]) ** 2).sum(-1), axis=1)[:, 1]  # each point's nearest other
    assert np.array_equal(nearest // 30, np.arange(60) // 30)  # the map keeps the clusters apart
    assert tsne_perplexity(60) == pytest.approx(59 / 3) and tsne_perplexity(2000) == 30.0
    _, html = tiny_run
    section = html[html.index('<section id="projection">'):]
    section = section[:section.index("</section>")]
    assert '<img alt="projection"' in section and '<img alt="tsne"' in section
    assert "t-SNE (seeded" in section and "the report&#x27;s token groups" in section
    assert "vowels" in section and "digits" in section  # the default groups' legend


def test_groups_json_colours_the_token_map(tiny_run, tmp_path):
    page, _ = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(page.parent, run_dir, ignore=shutil.ignore_patterns("checkpoints", "report*"))
    items = json.loads((run_dir / "data" / "vocab-items.json").read_text())
    ids, strings = items["ids"][8:], dict(zip(items["ids"], items["strings"]))
    sizes = [5] * 12 + [3, 3]  # 14 groups: the 12 largest get colours, the last two are "other"
    starts = np.cumsum([0] + sizes)
    first = Level(8, [Group(f"grp{n}", ids[a:b]) for n, (a, b) in enumerate(zip(starts[:-1], starts[1:]))])
    second = Level(16, [Group("fine0", ids[:30], "grp0"), Group("fine1", ids[30:66], "grp6")])
    (run_dir / "groups.json").write_text(json.dumps(Hierarchy([first, second], "imposed").to_json(strings)))

    data = load_run(run_dir)  # the page without its slow figures: the map is the one under test
    assert len(data.token_map.strings) == 66 and data.token_map.groups[:6] == ["grp0"] * 5 + ["grp1"]
    html = render(data, {"projection": maps.projection(data.token_map, data.dims)})
    legend = re.search(r'<p class="legend">(.*?)</p>', html).group(1)
    assert [name for name in re.findall(r"</span>([^<(]+) \(", legend)] == [f"grp{n}" for n in range(12)] + ["other"]
    assert "other (2 groups) (6)" in legend and legend.count("#b4b4b4") == 1  # one grey entry
    assert len(set(re.findall(r"background:(#[0-9a-f]{6})", legend))) == 13  # 12 colours and grey
    assert "the 14 groups of the first level of groups.json (its 66 tokens; level tied to prefix 8)" in html
    entries = legend_entries(["a", "b", "b"] + [f"x{i}" for i in range(11)])  # 13 groups
    assert entries[:2] == [("a", PALETTE[0], 1), ("b", PALETTE[1], 2)]  # colours in order of appearance
    assert entries[-1] == ("other (1 group)", OTHER, 1) and "x10" not in [e[0] for e in entries]  # ties: earlier


def test_bytes_per_vector_rows_are_compare_precisions_on_the_holdout(tiny_run):
    page, html = tiny_run
    run_dir = page.parent
    result = json.loads((run_dir / BYTES_NAME).read_text())
    rows = {(r["model"], r["dim"], r["precision"]): r for r in result["rows"]}
    assert rows[("student", 32, "binary")]["bytes_per_vector"] == 32 // 8
    assert rows[("student", 8, "float32")]["bytes_per_vector"] == 4 * 8
    assert rows[("teacher_rotated", 32, "binary")]["bytes_per_vector"] == 4  # the tiny teacher is 32 wide
    assert len(rows) == 2 * 3 * 3 and all(0.0 <= r["overlap"] <= 1.0 for r in result["rows"])

    data = run_dir / "data"
    texts = [json.loads(line) for line in (data / "holdout.jsonl").read_text().splitlines()]
    x_t = normalize_prefix(TargetView.load(data, "targets").pooled(np.load(data / "split.npz")["held"]))
    x_s = load_student(run_dir / "student").encode(texts)
    expected = compare_precisions(x_t, x_s, [8, 16, 32], ["float32", "int8", "binary"], k=10)
    assert [{k: v for k, v in r.items() if k != "model"} for r in result["rows"] if r["model"] == "student"] == \
        expected
    summary = json.loads((run_dir / "summary.json").read_text())  # float32 is the summary's held-out overlap@10
    for d in (8, 16, 32):
        assert rows[("student", d, "float32")]["overlap"] == pytest.approx(
            summary["holdout"]["student"][str(d)]["overlap@10"])
    assert rows[("teacher_rotated", 32, "float32")]["overlap"] == pytest.approx(1.0)  # full width: same cosines
    section = html[html.index('<section id="bytes">'):html.index('<section id="training">')]
    assert '<img alt="bytes"' in section and "report-bytes.json" in section
    assert f"{rows[('student', 32, 'binary')]['overlap']:.3f}" in section  # the table under the plot


def test_a_report_without_its_target_cache_labels_tokens_with_the_runs_teacher_options(tiny_run, tmp_path,
                                                                                        monkeypatch):
    """The cache gone (moved, cleaned), the report labels its plotted tokens afresh with the teacher the run
    was labeled with: every option of config.json, its dtype among them."""
    import distill.pipeline.prepare as prepare_module
    import distill.report.data as report_data

    page, _ = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(page.parent, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["teacher_dtype"] = "float32"
    (run_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(report_data, "_find_vocab_targets", lambda run_dir: None)  # the cache is gone
    seen = []
    real = prepare_module.run_teacher
    monkeypatch.setattr(prepare_module, "run_teacher", lambda cfg, state: seen.append(cfg) or real(cfg, state))
    data = load_run(run_dir)
    assert [c.teacher_dtype for c in seen] == ["float32"] and seen[0].teacher == config["teacher"]
    assert data.tokens is not None and len(data.tokens.strings) >= 2
