"""GPU labeling and training throughput. Prints markdown tables; needs CUDA.

- Labeling: texts/s and tokens/s of ``Teacher.embed_ids`` in bf16 and fp32 at batch sizes 64-1024, for a
  bert-base-shaped teacher (``BertConfig()``, random weights: speed does not depend on their values)
  and the bundled MiniLM, with the model FLOP/s as a share of the card's bf16 dense peak.
- 1M texts labeled by MiniLM through ``distill.pipeline.targets.label`` (tokenization, forward passes,
  shard files), end to end.
- Training steps/s of the static and the transformer student (batch 256) on MiniLM-shaped targets.

    python bench/gpu.py --peak-tflops 989 --million 1000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def texts(n: int, seed: int = 0) -> list[str]:
    """Unique English-like sentences of 8-30 words (about 20-45 tokens)."""
    rng = np.random.default_rng(seed)
    words = ("the a of to and in is was for on that with as by at from his her it an were are which this be "
             "have had one their not but all new more first two after city team year music river market film "
             "history school war season game time world state government system number people water light").split()
    return [" ".join(rng.choice(words, rng.integers(8, 31))) + f" {i}." for i in range(n)]


def model_flops_per_token(config, seq: float) -> float:
    """Forward FLOPs per token of a BERT-style encoder: 2 x non-embedding params + attention scores."""
    d, L, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    params = L * (4 * d * d + 2 * d * ff)
    return 2 * params + L * 4 * seq * d


def labeling(teacher, batch_sizes, n: int, peak: float) -> list[str]:
    seqs, _ = teacher.tokenize(texts(n))
    tokens = sum(len(s) for s in seqs)
    rows = []
    teacher.embed_ids(seqs[:batch_sizes[0]], batch_size=batch_sizes[0])  # warm up
    for bs in batch_sizes:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        teacher.embed_ids(seqs, batch_size=bs)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        flops = model_flops_per_token(teacher.model.config, tokens / n) * tokens
        rows.append(f"| {teacher.source.name[-30:]} | {str(teacher.dtype).removeprefix('torch.')} | {bs} | "
                    f"{n / dt:,.0f} | {tokens / dt:,.0f} | {flops / dt / 1e12:.1f} | {flops / dt / 1e12 / peak:.0%} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the card (H100/H200 SXM: 989)")
    p.add_argument("--n", type=int, default=20_000, help="texts per labeling measurement")
    p.add_argument("--million", type=int, default=1_000_000, help="texts for the end-to-end labeling run")
    p.add_argument("--batch-sizes", default="64,128,256,512,1024")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from distill.teachers import load_teacher
    from distill.teachers.registry import bundled_minilm_path

    card = torch.cuda.get_device_name()
    print(f"\n`python bench/gpu.py`, {time.strftime('%Y-%m-%d')}, {card}, torch {torch.__version__}\n")
    work = Path(tempfile.mkdtemp(prefix="distill-gpu-"))
    base = work / "bert-base-random"
    BertModel(BertConfig()).save_pretrained(base)
    AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(base)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print("| teacher | dtype | batch | texts/s | tokens/s | model TFLOP/s | of bf16 peak |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec in (base, "minilm"):
        for dtype in ("bfloat16", "float32"):
            teacher = load_teacher(spec, device="cuda", dtype=dtype)
            print("\n".join(labeling(teacher, sizes, args.n, args.peak_tflops)), flush=True)
            del teacher
            torch.cuda.empty_cache()

    from distill.pipeline.targets import label

    teacher = load_teacher("minilm", device="cuda")
    corpus = texts(args.million, seed=1)
    t0 = time.perf_counter()
    view = label(teacher, "text", work / "targets", corpus, batch_size=1024, progress=False)
    dt = time.perf_counter() - t0
    print(f"\n| {args.million:,} texts labeled by MiniLM (bf16, batch 1024, tokenization and shard files included) "
          f"| {dt:.1f} s | {args.million / dt:,.0f} texts/s |\n|---|---:|---:|")
    assert len(view) == args.million

    del teacher
    torch.cuda.empty_cache()
    print("\n| student (MiniLM targets, 50k texts, batch 256, 1 epoch) | steps/s | texts/s |\n|---|---:|---:|")
    for kind, steps_s in train_rates(work, corpus[:50_000]).items():
        print(f"| {kind} | {steps_s:.1f} | {steps_s * 256:,.0f} |")


def train_rates(work: Path, corpus: list[str]) -> dict[str, float]:
    """Optimizer steps per second of `distill run`'s training stage on CUDA, per student kind."""
    import json

    from distill.pipeline.run import RunConfig, run
    from distill.pipeline.train import TrainConfig

    path = work / "train.txt"
    path.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    rates = {}
    for kind in ("static", "transformer"):
        out = work / f"run-{kind}"
        run(RunConfig(out=str(out), corpus=str(path), student=kind, targets_dir=str(work / "targets"), device="cuda",
                      teacher_batch_size=1024, train=TrainConfig(epochs=1, batch_size=256, log_every=50)),
            until="train")
        result = json.loads((out / "train.json").read_text())
        rates[kind] = result["steps"] / result["seconds"]
    return rates


if __name__ == "__main__":
    main()
