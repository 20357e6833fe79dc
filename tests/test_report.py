"""The report of a tiny run: every section, every image decodes, nothing points outside the page."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig
from distill.report import write_report
from distill.report.data import read_groups, term_series
from distill.report.html import SECTIONS

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
    for key, heading in SECTIONS.items():
        assert f'<section id="{key}">' in html and heading in html
    images = _DATA_URI.findall(html)
    assert len(images) == 4  # quality, training, heatmaps, projection
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    pngs = sorted(page.parent.glob("report-*.png"))
    assert [p.stem for p in pngs] == ["report-heatmaps", "report-projection", "report-quality", "report-training"]
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
    assert len(_DATA_URI.findall(html)) == 4
    missing = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert missing.exit_code == 2 and "no finished run" in missing.output
    with pytest.raises(DistillError, match="fewer than two"):
        write_report(page.parent, groups={"none": ["zzzz", "qqqq"]}, out=tmp_path / "x")
