"""What a report shows, gathered from a run folder: its files, plus token vectors of teacher and student.

Teacher token vectors come from the run's vocab target cache (no teacher forward pass); only when
the cache is gone is the teacher loaded, and then only the plotted tokens are labeled.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.pipeline.folder import RunFolder

logger = logging.getLogger(__name__)

_PUNCT = list(".,!?;:-\"()")
_WORDS = ["the", "and", "not", "good", "bad", "great", "movie", "film", "man", "woman", "king", "queen",
          "dog", "cat", "house", "red", "blue", "city", "river", "teacher"]
DEFAULT_GROUPS: dict[str, list[str]] = {
    "vowels": list("aeiou"),
    "consonants": list("bcdkmst"),
    "digits": list("0123456789"),
    "punctuation": _PUNCT,
    "words": _WORDS,
}
N_NEIGHBOUR_TOKENS = 3000  # word tokens searched for the "neighbours that changed" section
N_QUERIES = 60  # sample queries among them; the most changed are shown
N_MAP_TOKENS = 2000  # the token map (PCA and t-SNE panels) draws at most this many tokens, a seeded sample
PRECISIONS = ("float32", "int8", "binary")  # the stored codes of the bytes-per-vector comparison


@dataclass
class TokenSet:
    """The plotted tokens, ordered by group, with teacher (PCA-rotated) and student vectors."""

    strings: list[str]
    groups: list[str]  # (N,) group of each token
    teacher: np.ndarray  # (N, D_t) rotated teacher vectors: prefixes comparable with the student's
    student: np.ndarray  # (N, D_s)


@dataclass
class RunData:
    run_dir: Path
    config: dict
    summary: dict
    metrics: list[dict]
    dims: list[int]
    tokens: TokenSet | None = None
    token_space: dict | None = None  # compare_spaces rows and neighbour examples over word tokens
    token_map: TokenSet | None = None  # the tokens of the 2-D maps: groups.json's first level, else ``tokens``
    map_source: str = ""  # what the map's colours are, for its caption
    bytes_rows: dict | None = None  # overlap@10 per (model, prefix size, precision) on the held-out texts
    facts: dict = field(default_factory=dict)  # sizes and speeds


def read_groups(path: str | Path) -> dict[str, list[str]]:
    """User token groups: JSON ``{"group": ["tok", ...]}`` or text lines ``group: tok tok ...``.

    :raises DistillError: on a missing or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"groups file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        groups = json.loads(text)
        if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
            raise DistillError(f"{path} must hold an object of group name -> list of tokens")
        return {str(k): [str(t) for t in v] for k, v in groups.items()}
    groups = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise DistillError(f"{path}: line {n} needs `group: token token ...`")
        name, tokens = line.split(":", 1)
        groups[name.strip()] = tokens.split()
    return groups


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line torn by a killed run: the lines before it are whole
            break
    return rows


def _find_vocab_targets(run_dir: Path):
    """The run's vocab targets (from the target store its ``data/`` names); None when they are gone."""
    from distill.pipeline.prepare import load_vocab

    try:
        return load_vocab(run_dir)
    except (OSError, ValueError, KeyError, DistillError):
        return None


def _teacher_vectors(config: dict, summary: dict, run_dir: Path, wanted: list[str]
                     ) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(strings, token ids, all vocab vectors or None, vectors of ``wanted`` when labeled afresh)."""
    vocab = _find_vocab_targets(run_dir)
    if vocab is not None:
        return list(vocab.strings), np.asarray(vocab.ids), np.asarray(vocab.pooled, dtype=np.float32), None
    logger.info("no cached vocab targets for this run's teacher; labeling the plotted tokens afresh")
    from distill.pipeline.config import RunConfig
    from distill.pipeline.prepare import run_teacher

    teacher = run_teacher(RunConfig.from_dict(config), None)  # every option that decides its targets, dtype too
    ids, strings = teacher.vocab()
    row = {s: i for s, i in zip(strings, ids.tolist())}
    keep = [s for s in wanted if s in row]
    return keep, np.array([row[s] for s in keep], dtype=np.int64), None, teacher.vocab_targets(
        np.array([row[s] for s in keep], dtype=np.int64))


def _token_set(groups: dict[str, list[str]], strings: list[str], ids: np.ndarray, teacher_x: np.ndarray,
               student, rotate) -> TokenSet:
    row = {s: i for i, s in enumerate(strings)}
    picked, names, seen = [], [], set()
    for name, tokens in groups.items():
        for t in tokens:
            if t in row and t not in seen:
                picked.append(row[t])
                names.append(name)
                seen.add(t)
    if len(picked) < 2:
        raise DistillError("fewer than two of the report's tokens are in the teacher's vocabulary")
    picked_ids = ids[picked]
    return TokenSet([strings[i] for i in picked], names, rotate(teacher_x[picked]),
                    student.embed_ids([[int(i)] for i in picked_ids]))


def _hierarchy_map(run_dir: Path, strings: list[str], ids: np.ndarray, teacher_all: np.ndarray, student,
                   rotate) -> tuple[TokenSet, str] | None:
    """The members of the first (coarsest) level of the run's ``groups.json``, each labelled with its group;
    a seeded sample of ``N_MAP_TOKENS`` when the level has more. None when the run has no groups.json."""
    from distill.hierarchy.tree import Hierarchy

    path = RunFolder(run_dir).groups
    if not path.is_file():
        return None
    try:
        hierarchy = Hierarchy.load(path)
    except (ValueError, KeyError, TypeError, DistillError) as e:  # a torn or foreign file: the report goes on
        logger.warning("%s is not a hierarchy (%s); the token map shows the report's groups", path, e)
        return None
    if not hierarchy.levels:
        return None
    level = hierarchy.levels[0]
    row = {int(t): r for r, t in enumerate(ids.tolist())}
    members = [(row[i], g.name) for g in level.groups for i in g.ids if i in row]  # ordered by group
    if len(members) < 2:
        return None
    n_members = len(members)
    if n_members > N_MAP_TOKENS:
        keep = np.sort(np.random.default_rng(0).choice(n_members, N_MAP_TOKENS, replace=False))
        members = [members[i] for i in keep]
    rows = np.array([r for r, _ in members], dtype=np.int64)
    tokens = TokenSet([strings[r] for r in rows], [g for _, g in members], rotate(teacher_all[rows]),
                      student.embed_ids([[int(i)] for i in ids[rows]]))
    sampled = f"{len(rows):,} of its {n_members:,} tokens, a seeded sample" if n_members > len(rows) else \
        f"its {n_members:,} tokens"
    return tokens, (f"the {len(level.groups)} groups of the first level of groups.json ({sampled}; "
                    f"level tied to prefix {level.prefix})")


def _bytes_rows(run_dir: Path, student, pca, dims: list[int], k: int = 10) -> dict | None:
    """Overlap@k with the full teacher on the run's held-out texts of every (prefix size, precision) of the
    student and of the teacher's PCA-rotated prefixes (those at the student's sizes and the full width).

    The teacher side reads the held-out targets from the run's target store (no teacher pass).
    None when the run holds too few held-out texts or its targets are gone.
    """
    from distill.index.compare import compare_precisions
    from distill.index.search import normalize_prefix
    from distill.pipeline.targets import TargetView

    folder = RunFolder(run_dir)
    try:
        texts = [json.loads(line) for line in folder.holdout.read_text(encoding="utf-8").splitlines()]
        x_teacher = TargetView.load(folder.data, "targets").pooled(np.load(folder.split)["held"])  # (N, D_t)
    except (OSError, ValueError, KeyError, DistillError):
        return None
    if len(texts) <= k or len(texts) != len(x_teacher):
        return None
    x_ref = normalize_prefix(x_teacher)
    rows = [{"model": "student", **r}
            for r in compare_precisions(x_ref, student.encode(texts), dims, PRECISIONS, k=k)]
    if pca is not None:
        width = x_teacher.shape[1]
        t_dims = sorted({d for d in dims if d < width} | {width})
        rows += [{"model": "teacher_rotated", **r}
                 for r in compare_precisions(x_ref, pca.transform(x_teacher), t_dims, PRECISIONS, k=k)]
    return {"k": k, "n_texts": len(texts), "teacher_dim": int(x_teacher.shape[1]), "rows": rows}


def _word_rows(strings: list[str], n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of whole-word tokens (letters only, 3+ characters; no URL fragments)."""
    words = [i for i, s in enumerate(strings) if len(s) >= 3 and s.isalpha() and "http" not in s and "www" not in s]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(words, min(n, len(words)), replace=False)) if words else np.array([], np.int64)


def _neighbour_space(strings: list[str], ids: np.ndarray, teacher_all: np.ndarray, student, dims: list[int],
                     rotate) -> dict | None:
    """Student prefixes and PCA-truncated teacher prefixes vs the full teacher, over sampled word tokens."""
    from distill.index.compare import compare_spaces
    from distill.index.search import normalize_prefix

    rows = _word_rows(strings, N_NEIGHBOUR_TOKENS)
    if len(rows) <= 20:
        return None
    words = [strings[i] for i in rows]
    x_t = normalize_prefix(rotate(teacher_all[rows]))  # (N, D_t); the rotation keeps cosines (uncentered)
    x_s = normalize_prefix(student.embed_ids([[int(i)] for i in ids[rows]]))  # (N, D_s)
    queries = sorted(np.random.default_rng(1).choice(len(rows), min(N_QUERIES, len(rows)), replace=False).tolist())
    s_rows, examples = compare_spaces(x_t, x_s, dims, "student", k=10, example_rows=queries)
    t_rows, _ = compare_spaces(x_t, x_t, [d for d in dims if d < x_t.shape[1]], "teacher-prefix", k=10)
    from distill.index.search import self_knn

    teacher_nn = self_knn(x_t, 10)
    for ex in examples:
        for q in ex["queries"]:
            q["teacher"] = [words[i] for i in teacher_nn[q["row"]]]
            q["text"] = words[q["row"]]
            q["lost"] = [words[i] for i in q["lost"]]
            q["gained"] = [words[i] for i in q["gained"]]
    return {"n_tokens": len(rows), "rows": [r.as_dict() for r in s_rows + t_rows], "examples": examples}


def _encode_speed(student, config: dict) -> float | None:
    """Student texts/s on up to 2,000 corpus texts (None without a readable corpus)."""
    if not config.get("corpus"):
        return None
    from distill.pipeline.corpus import read_corpus

    try:
        texts = read_corpus(config["corpus"], text_column=config.get("text_column", "text"), limit=2000).texts
    except (DistillError, OSError):
        return None
    student.encode(texts[:64])  # warm up
    t0 = time.perf_counter()
    student.encode(texts)
    return len(texts) / max(time.perf_counter() - t0, 1e-9)


def _speed_fact(summary: dict, student, config: dict) -> str:
    """The student's speed: as the eval stage measured it beside the teacher's (runs since summaries carry
    ``speed``), else timed here on the corpus."""
    speed = summary.get("speed")
    if speed:
        return (f"{speed['sentences_per_s']:,.0f} texts/s on {speed['student_device']} against the teacher's "
                f"{speed['teacher_sentences_per_s']:,.0f} on {speed['device']} ({speed['speedup']:,.0f}x; "
                f"{speed['texts']} held-out texts)")
    s = _encode_speed(student, config)
    return f"{s:,.0f} texts/s (CPU, corpus texts)" if s else "n/a"


def load_run(run_dir: str | Path, groups: dict[str, list[str]] | None = None) -> RunData:
    """Read a run folder and compute what its report needs.

    :raises DistillError: when the folder holds no finished run (no summary.json or student/).
    """
    folder = RunFolder(run_dir)
    run_dir = folder.root
    for path in (folder.config, folder.summary):
        if not path.is_file():
            raise DistillError(f"{run_dir} holds no finished run (no {path.name})")
    config, summary = folder.read_config(), folder.read_summary()
    data = RunData(run_dir, config, summary, read_metrics(folder.metrics), [int(d) for d in summary.get("dims", [])])

    from distill.pipeline.pca import PCARotation
    from distill.students import load_student

    student = load_student(folder.student)
    data.dims = data.dims or student.dims
    pca = PCARotation.load(folder.pca) if folder.pca.is_file() else None

    def rotate(x: np.ndarray) -> np.ndarray:
        return pca.transform(x) if pca is not None else np.asarray(x, dtype=np.float32)

    groups = groups or DEFAULT_GROUPS
    wanted = [t for tokens in groups.values() for t in tokens]
    strings, ids, teacher_all, fresh = _teacher_vectors(config, summary, run_dir, wanted)
    if teacher_all is not None:
        data.tokens = _token_set(groups, strings, ids, teacher_all, student, rotate)
        data.token_space = _neighbour_space(strings, ids, teacher_all, student, data.dims, rotate)
        hierarchy = _hierarchy_map(run_dir, strings, ids, teacher_all, student, rotate)
    else:
        data.tokens = _token_set(groups, strings, ids, fresh, student, rotate)
        hierarchy = None
        if folder.groups.is_file():
            logger.info("no cached vocab targets: the token map shows the report's groups, not groups.json")
    data.token_map, data.map_source = hierarchy or (data.tokens, "the report's token groups")
    data.bytes_rows = _bytes_rows(run_dir, student, pca, data.dims)

    n_params = sum(p.numel() for p in student.parameters())
    weights = folder.student / "model.safetensors"
    speeds = [m["texts_per_s"] for m in data.metrics if "texts_per_s" in m]
    data.facts = {
        "student parameters": f"{n_params:,}",
        "student weights": f"{weights.stat().st_size / 2**20:.1f} MiB" if weights.is_file() else "?",
        "training speed": f"{np.median(speeds):,.0f} texts/s (median)" if speeds else "n/a",
        "student encode speed": _speed_fact(summary, student, config),
        "run time": f"{summary.get('seconds', 0):,.0f} s",
    }
    return data


def term_series(metrics: list[dict]) -> dict[str, dict[int, tuple[list[int], list[float]]]]:
    """Loss terms by name and prefix size: ``{"mse": {32: (steps, values)}}`` from keys like ``mse@32``."""
    out: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for m in metrics:
        for key, value in m.items():
            match = re.fullmatch(r"([A-Za-z_]+)@(\d+)", key)
            if match and isinstance(value, (int, float)):
                steps, values = out.setdefault(match.group(1), {}).setdefault(int(match.group(2)), ([], []))
                steps.append(int(m["step"]))
                values.append(float(value))
    return out
