"""Export formats: folder size, STS-B dev Spearman and encode speed of each format a student exports to.

    python bench/export.py --run /tmp/exp-run                    # a finished `distill run` (static student)
    python bench/export.py --run /tmp/exp-run --transformer /tmp/exp-run-tf --out /tmp/export-bench.json

Every (format, dtype) the static student exports to is written under ``--work``, loaded back with that
format's own loader (distill.load, SentenceTransformer, model2vec's StaticModel, onnxruntime) and scored on
STS-B dev at 64 dims and at full width (cosine of the re-normalized prefix; Spearman x100); "lost" is the
drop from the float32 native folder. Speed: sentences/s of each loader's encode over the STS-B dev
sentences (tokenization included), best of ``--repeats``, the formats taking turns.

The transformer student (``--transformer RUN_OR_STUDENT``; without it, one of the default shape --
width 256, 2 layers -- is built on the static student's tokenizer with random encoder weights, which
times the same) is exported to ONNX and timed against PyTorch: length-sorted batches of 128 on both
sides, ``--threads`` intra-op threads each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the cores are shared

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import STS_DEV

from distill.vectors import normalize  # noqa: E402

FORMATS = [("native", "float32"), ("native", "float16"), ("native", "int8"), ("sentence-transformers", "float32"),
           ("model2vec", "float32"), ("model2vec", "float16"), ("model2vec", "int8"), ("onnx", "float32")]
logger = logging.getLogger("bench.export")




class Onnx:
    """An exported ONNX folder behind ``encode``: length-sorted, padded batches through onnxruntime."""

    def __init__(self, folder: Path, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # tokenized once, then padded per length-sorted batch below
        self.pad_id = json.loads((folder / "distill_onnx.json").read_text())["pad_id"]

    def encode(self, texts: list[str], batch_size: int = 128, **_) -> np.ndarray:
        seqs = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = np.argsort([-len(q) for q in seqs], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(1, len(seqs[idx[0]]))
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)  # (B, T)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, :len(seqs[i])] = seqs[i]
                mask[row, :len(seqs[i])] = 1
            x = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out.shape[1] == 0:
                out = np.zeros((len(texts), x.shape[1]), dtype=np.float32)
            out[idx] = x
        return out


class Loaded:
    """Any loader's model behind ``encode(texts) -> normalized full-width vectors``."""

    def __init__(self, fmt: str, folder: Path, threads: int):
        self.fmt = fmt
        if fmt == "native":
            import distill

            self.model = distill.load(folder)
        elif fmt == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(folder), device="cpu")
        elif fmt == "model2vec":
            from model2vec import StaticModel

            self.model = StaticModel.from_pretrained(folder)
        else:
            self.model = Onnx(folder, threads)

    def encode(self, texts: list[str], batch_size: int = 1024, **_) -> np.ndarray:
        if self.fmt == "native":
            return self.model.encode(texts, batch_size=batch_size)
        if self.fmt == "sentence-transformers":
            return normalize(self.model.encode(texts, batch_size=batch_size, show_progress_bar=False))
        if self.fmt == "model2vec":
            return normalize(self.model.encode(texts, batch_size=batch_size, use_multiprocessing=False))
        return normalize(self.model.encode(texts))


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def best_rates(models: dict, texts: list[str], repeats: int) -> dict[str, float]:
    """Sentences/s of each model's ``encode``, best of ``repeats``, the models taking turns (load from
    other jobs on a shared machine then falls on each alike)."""
    best = dict.fromkeys(models, float("inf"))
    for model in models.values():
        model.encode(texts[:64])  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.encode(texts)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(texts) / seconds for name, seconds in best.items()}


def default_transformer(static):
    """A transformer student of the pipeline's default shape on ``static``'s tokenizer and rows."""
    from distill.students import StudentConfig, TransformerStudent

    c = static.config
    cfg = StudentConfig(kind="transformer", vocab_size=c.vocab_size, dim=c.dim, dims=c.dims, teacher=c.teacher,
                        width=256, n_layers=2, n_heads=4, max_length=256, pad_id=c.pad_id)
    torch.manual_seed(0)
    student = TransformerStudent(cfg, static.tokenizer)
    with torch.no_grad():
        student.embedding.copy_(static.embedding)
        student.log_weight.copy_(static.log_weight)
        torch.nn.init.normal_(student.head.weight, std=0.02)  # a non-zero context head, as after training
    return student.eval()


def markdown(results: dict) -> str:
    rows = results["formats"]
    ref = rows["native float32"]
    out = ["| format | tables | folder MB | weights file MB | vs float32 | STS-B dev @64 | lost @64 | STS-B dev @full "
           "| lost @full | sentences/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        fmt, dtype = name.rsplit(" ", 1)
        out.append(f"| {fmt} | {dtype} | {r['bytes'] / 1e6:.2f} | {r['weights_bytes'] / 1e6:.2f} | "
                   f"{r['weights_bytes'] / ref['weights_bytes']:.3f} | {r['sts']['64']:.2f} | "
                   f"{ref['sts']['64'] - r['sts']['64']:+.3f} | {r['sts']['full']:.2f} | "
                   f"{ref['sts']['full'] - r['sts']['full']:+.3f} | {r['sentences_per_s']:,.0f} |")
    t = results.get("transformer")
    if t:
        out += ["", "| transformer student | sentences/s | max abs diff vs PyTorch |", "|---|---:|---:|",
                f"| PyTorch ({t['threads']} thread(s)) | {t['torch']:,.0f} | |",
                f"| onnxruntime ({t['threads']} thread(s)) | {t['onnx']:,.0f} | {t['max_abs_diff']:.1e} |",
                f"| ratio | {t['onnx'] / t['torch']:.2f}x | |"]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A run folder (or student folder) of a static student.")
    parser.add_argument("--transformer", type=Path, help="A transformer run or student folder (default: built).")
    parser.add_argument("--sts", type=Path, default=STS_DEV)
    parser.add_argument("--work", type=Path, default=Path("/tmp/distill-export-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads of torch and onnxruntime.")
    parser.add_argument("--out", type=Path, help="Write the numbers as JSON here too.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    import distill
    from distill.pipeline.evaluate import read_pairs, sts_scores
    from distill.students.card import run_summary
    from distill.students.export import export_student

    student = distill.load(args.run)
    summary = run_summary(args.run, student)
    pairs = read_pairs(args.sts)
    sts_texts = sorted(set(pairs.first) | set(pairs.second))
    results: dict = {"meta": {
        "date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), torch {torch.__version__}",
        "student": {"kind": student.kind, "dim": student.dim, "dims": student.dims,
                    "vocab": student.config.vocab_size, "teacher": student.config.teacher.get("name")},
        "sts": str(args.sts), "sts_sentences": len(sts_texts)}, "formats": {}}
    models = {}
    for fmt, dtype in FORMATS:
        name = f"{fmt} {dtype}"
        folder = args.work / f"{fmt}-{dtype}"
        logger.info("exporting %s", name)
        export_student(student, folder, fmt, dtype, summary=summary)
        models[name] = Loaded(fmt, folder, args.threads)
        scores = sts_scores(models[name], pairs, [64, None])
        weights = folder / ("model.onnx" if fmt == "onnx" else "model.safetensors")
        results["formats"][name] = {"bytes": folder_size(folder), "weights_bytes": weights.stat().st_size, "sts": {
            "64": scores["64"]["spearman"], "full": scores[str(student.dim)]["spearman"]}}
    logger.info("timing %d formats on %d sentences", len(models), len(sts_texts))
    for name, rate in best_rates(models, sts_texts, args.repeats).items():
        results["formats"][name]["sentences_per_s"] = rate

    transformer = distill.load(args.transformer) if args.transformer else default_transformer(student)
    logger.info("exporting the transformer student to ONNX")
    export_student(transformer, args.work / "transformer-onnx", "onnx")
    onnx = Onnx(args.work / "transformer-onnx", args.threads)

    class Torch:
        def encode(self, texts, **_):
            return transformer.encode(texts, batch_size=len(texts))  # embed_ids: sorted batches of 128

    diff = float(np.abs(onnx.encode(sts_texts[:256]) - transformer.encode(sts_texts[:256])).max())
    rates = best_rates({"torch": Torch(), "onnx": onnx}, sts_texts, max(1, args.repeats - 1))
    results["transformer"] = {**rates, "threads": args.threads, "max_abs_diff": diff,
                              "student": "given" if args.transformer else "default shape, random encoder",
                              "width": transformer.config.width, "n_layers": transformer.config.n_layers}
    results["meta"]["seconds"] = time.perf_counter() - t_start
    print(markdown(results))  # noqa: T201
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
