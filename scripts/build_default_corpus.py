"""Build the embedded default corpus, distill/data/wikitext2.txt.gz, from WikiText-2's tokenized text.

WikiText-2 (Merity et al., 2016; CC BY-SA 3.0) is the one corpus of our development data whose license
lets us ship it. This script detokenizes its validation and test paragraphs ("a @-@ b" -> "a-b",
" , " -> ", "), splits them into sentences, keeps those without the dataset's ``<unk>`` placeholder
and with 5 to 60 words, removes duplicates, and writes one sentence per line, gzipped.

    python scripts/build_default_corpus.py PATH/wikitext2-valid.txt PATH/wikitext2-test.txt
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "distill" / "data" / "wikitext2.txt.gz"

_RULES = [
    (r" @(.)@ ", r"\1"),  # number and word joiners: 1 @,@ 000 -> 1,000; a @-@ b -> a-b
    (r" ([.,;:!?%)\]}])", r"\1"),  # no space before closing punctuation
    (r"([(\[{$£]) ", r"\1"),  # nor after opening punctuation and currency
    (r" (n't|'s|'re|'ve|'m|'ll|'d)\b", r"\1"),
    (r"\s+", " "),
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def detokenize(line: str) -> str:
    for pattern, repl in _RULES:
        line = re.sub(pattern, repl, line)
    line = re.sub(r'" (.*?) "', r'"\1"', line)  # quotes hug what they quote
    return line.strip()


def sentences(paths: list[Path]) -> list[str]:
    seen, out = set(), []
    for path in paths:
        for paragraph in path.read_text(encoding="utf-8").splitlines():
            for s in _SENTENCE_END.split(detokenize(paragraph)):
                words = len(s.split())
                if "<unk>" in s or not 5 <= words <= 60 or s in seen:
                    continue
                seen.add(s)
                out.append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+", help="WikiText-2 tokenized text files (valid, test)")
    args = parser.parse_args()
    lines = sentences(args.paths)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT, "wt", encoding="utf-8", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} sentences, {sum(len(s.split()) for s in lines)} words -> {OUT} "
          f"({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
