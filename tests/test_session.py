"""README's example session, walked end to end as a new user would, with the run folder handed to every
command (a tiny teacher and tiny files stand in for MiniLM, movie reviews, STS-B and NFCorpus)."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from distill.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, f"distill {' '.join(map(str, args))}\n{r.output}"
    return r.output


def test_readme_example_session(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts):
    import distill
    from distill.service.app import create_app
    from distill.service.settings import ServiceSettings

    sts = tmp_path / "sts.jsonl"
    sts.write_text("\n".join(json.dumps({"sentence1": tiny_texts[i], "sentence2": tiny_texts[i + 1],
                                         "score": float(i % 5)}) for i in range(0, 40, 2)))
    task = tmp_path / "nfcorpus"
    (task / "qrels").mkdir(parents=True)
    (task / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(tiny_texts[:50])))
    (task / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t[:25]}) + "\n"
                                                for i, t in enumerate(tiny_texts[:20])))
    (task / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n"
                                                                                    for i in range(20)))
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(tiny_texts[:50]) + "\n")
    run = tmp_path / "runs" / "mr20k"
    teacher, targets = str(tiny_bert_dir), str(tmp_path / "targets")

    out = _ok(["run", "--teacher", teacher, "--corpus", tiny_corpus, "--limit", 200, "--sts", sts, "--out", run,
               "--dims", "8,16,32", "--epochs", 1, "--holdout", 20, "--targets-dir", targets,
               "--retrieval", task, "--retrieval-split", "dev"])
    assert "retrieval on nfcorpus" in out and "STS Spearman" in out
    m = distill.load(run)
    assert m.encode(["a quiet garden"], dim=16).shape == (1, 16)

    _ok(["export", run, "--format", "sentence-transformers", "--out", tmp_path / "st-model"])
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "st-model"), truncate_dim=16)
    assert np.abs(st.encode(["a quiet garden"], normalize_embeddings=True) - m.encode(["a quiet garden"], dim=16)
                  ).max() < 1e-5
    _ok(["export", run, "--format", "model2vec", "--dtype", "int8", "--out", tmp_path / "m2v-model"])
    _ok(["embed", "--model", run, "--corpus", docs, "--dim", 16, "--out", tmp_path / "vecs.npy"])
    assert np.load(tmp_path / "vecs.npy").shape == (50, 16)
    with TestClient(create_app(ServiceSettings(model=run))) as c:
        r = c.post("/v1/embeddings", json={"input": ["a quiet garden"], "dimensions": 16})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 16

    # how it retrieves, beside the teacher's rotated prefixes
    _ok(["eval", run, "--retrieval", task, "--split", "dev", "--teacher", teacher, "--json", tmp_path / "r.json"])
    scores = json.loads((tmp_path / "r.json").read_text())
    assert set(scores["retrieval"]["nfcorpus"]) == {"8", "16", "32"}
    # asymmetric search: documents by the teacher in the run's space, queries by its student
    _ok(["index", "build", "--model", teacher, "--space", run, "--corpus", docs, "--out", tmp_path / "ix-teacher"])
    hits = json.loads(_ok(["query", tiny_texts[3], "--index", tmp_path / "ix-teacher", "--json"]))[0]["hits"]
    assert hits[0]["text"] == tiny_texts[3]
    _ok(["eval", run, "--retrieval", task, "--split", "dev", "--documents-by", teacher])

    # the index section's commands, handed the run folder too
    _ok(["index", "build", "--model", run, "--corpus", docs, "--out", tmp_path / "ix", "--dims", "8,32"])
    _ok(["query", "a quiet garden", "--index", tmp_path / "ix", "--funnel", "8:32"])
    _ok(["compare", "-t", teacher, "-s", run, "--corpus", docs, "--json"])
