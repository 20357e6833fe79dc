"""A vocabulary from the corpus: static students with the N most frequent split words of the training texts
added as rows of their own (``--vocab-from-corpus N``), against the same run without (N = 0).

Same teacher, corpus, split, seed and options; only N differs. One ``--targets-dir`` is shared, so the
corpus is labeled once (and each word once). Prints a markdown table: words added, their share of the
training texts' words, holdout overlap@10 with the teacher (in-domain, held-out texts of the same corpus)
and STS-B dev Spearman, per N.

    OMP_NUM_THREADS=1 python bench/vocab.py --corpus ../shared/data/corpus/movie_reviews.txt --limit 30000 \
        --sts ../shared/data/sts/sts-dev.csv --targets-dir /tmp/vocab-targets --out /tmp/vocab-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--limit", type=int, default=30000)
    p.add_argument("--sts", required=True)
    p.add_argument("--targets-dir", default="/tmp/vocab-targets")
    p.add_argument("--out", default="/tmp/vocab-bench")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n", default="0,10000,30000,100000", help="words to add, one run each (0: none)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    out = Path(args.out)
    results, seconds, same = {}, {}, {}
    for n in sorted(int(x) for x in args.n.split(",")):
        # a run that added fewer words than it asked for added every word that qualifies: a bigger N adds the
        # same words, and everything else being equal, gives the same student (not run again)
        full = [m for m, r in results.items() if 0 < m < n and r["corpus_words"]["added"] < m]
        if full:
            results[n], seconds[n], same[n] = results[full[0]], 0.0, full[0]
            print(f"N = {n}: the same words as N = {full[0]} (all that qualify)", flush=True)
            continue
        folder = out / f"n{n}"
        cfg = RunConfig(out=str(folder), teacher="minilm", corpus=args.corpus, limit=args.limit, sts=args.sts,
                        targets_dir=args.targets_dir, device=args.device, vocab_from_corpus=n or None,
                        train=TrainConfig(epochs=args.epochs))
        t0 = time.perf_counter()
        done = folder / "summary.json"
        results[n] = json.loads(done.read_text()) if done.is_file() else run(cfg, until="eval")
        seconds[n] = time.perf_counter() - t0
        print(f"N = {n}: {seconds[n]:.0f} s", flush=True)

    base = results[0] if 0 in results else next(iter(results.values()))
    dims = base["dims"]
    top, small = str(dims[-1]), str(dims[0])
    print(f"\nteacher minilm; {base['train_texts']} training texts, {base['holdout_texts']} held out; "
          f"teacher STS-B dev {base['sts']['teacher'][top]['spearman']:.2f}\n")
    print(f"| N | words added | share of words | overlap@10 ({small}) | overlap@10 ({top}) | vs N=0 | "
          f"STS-B dev ({top}) | vs N=0 | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    o0 = base["holdout"]["student"][top]["overlap@10"]
    s0 = base["sts"]["student"][top]["spearman"]
    for n, r in results.items():
        words = r.get("corpus_words", {"added": 0, "occurrences": 0})
        total = _words_in_training_texts(out / f"n{same.get(n, n)}") if words["added"] else None
        share = f"{100 * words['occurrences'] / total:.1f}%" if total else "-"
        o = r["holdout"]["student"][top]["overlap@10"]
        s = r["sts"]["student"][top]["spearman"]
        print(f"| {n:,} | {words['added']:,} | {share} | {r['holdout']['student'][small]['overlap@10']:.3f} | "
              f"{o:.3f} | {100 * (o - o0) / o0:+.1f}% | {s:.2f} | {s - s0:+.2f} | "
              f"{f'= N {same[n]:,}' if n in same else f'{seconds[n]:.0f}'} |")


def _words_in_training_texts(run_dir: Path) -> int:
    """How many alphabetic words the run's training texts hold (as the teacher's normalizer writes them)."""
    import numpy as np
    from tokenizers import Tokenizer

    from distill.pipeline.corpus import Corpus
    from distill.pipeline.run import load_config
    from distill.pipeline.vocab import training_texts
    from distill.students.vocab import count_words

    cfg = load_config(run_dir)
    tokenizer = Tokenizer.from_str((run_dir / "data" / "tokenizer.json").read_text())
    train = np.load(run_dir / "data" / "split.npz")["train"]
    corpus = Corpus(cfg.corpus, text_column=cfg.text_column, limit=cfg.limit)
    return sum(count_words(tokenizer, training_texts(corpus, train)).values())


if __name__ == "__main__":
    main()
