"""Model cards: the ``README.md`` with Hugging Face front matter that every exported student folder carries.

The card says what the model is (teacher, kind, width, prefix sizes, format), the run's measured quality
per prefix when its ``summary.json`` is at hand, and how to load it with each loader that reads the folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from distill.students.base import Student
from distill.students.static import StaticStudent

logger = logging.getLogger(__name__)
CARD_NAME = "README.md"

LIBRARY = {"native": "distill", "sentence-transformers": "sentence-transformers", "model2vec": "model2vec",
           "onnx": "onnx"}
FORMAT_TEXT = {
    "native": "the native distill folder (`distill_student.json`, `model.safetensors`, `tokenizer.json`)",
    "sentence-transformers": "a sentence-transformers folder (StaticEmbedding + Normalize)",
    "model2vec": "a Model2Vec folder (`config.json`, `model.safetensors`, `tokenizer.json`)",
    "onnx": "ONNX (`model.onnx`, `tokenizer.json`, `distill_onnx.json`)",
}
DTYPE_TEXT = {"float32": "float32", "float16": "float16 (half the size of float32)",
              "int8": "int8 with one float32 scale per row (about a quarter of the size of float32)"}


# ---- the teacher: name and license --------------------------------------------------------------------------
def hub_id(name: str | None) -> str | None:
    """``name`` if it reads as a Hugging Face id (``owner/model``), else None (a local folder, nothing)."""
    if not name or name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists():
        return None
    return name


def front_matter(text: str) -> dict:
    """The YAML front matter of a README (``---`` ... ``---`` at its top), or {}."""
    if not text.startswith("---"):
        return {}
    head, sep, _ = text[3:].partition("\n---")
    try:
        data = yaml.safe_load(head) if sep else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _teacher_readme(name: str) -> Path | None:
    """The teacher's README, looked up offline: its local folder, the bundled MiniLM, the Hugging Face cache."""
    local = Path(name)
    if local.is_absolute() and (local / CARD_NAME).is_file():
        return local / CARD_NAME
    from distill.teachers.registry import BUNDLED_ID, bundled_minilm_path

    if name == BUNDLED_ID:
        try:
            return bundled_minilm_path() / CARD_NAME
        except Exception:  # the bundled package is absent: try the cache
            pass
    if hub_id(name):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, CARD_NAME)  # never downloads
        if isinstance(cached, str):
            return Path(cached)
    return None


def teacher_license(teacher: dict) -> str | None:
    """The teacher's license: from its identity if recorded there, else from its README's front matter
    (found without network), else None."""
    if teacher.get("license"):
        return str(teacher["license"])
    readme = _teacher_readme(str(teacher.get("name") or "")) if teacher.get("name") else None
    if readme is None or not readme.is_file():
        return None
    found = front_matter(readme.read_text(encoding="utf-8", errors="replace")).get("license")
    return str(found) if found else None


# ---- the card ------------------------------------------------------------------------------------------------
def _quality(summary: dict, dims: list[int]) -> list[str]:
    lines: list[str] = []
    holdout = summary.get("holdout", {}).get("student")
    if holdout:
        held = int(summary.get("holdout_texts") or 0)
        lines += ["", f"Agreement with the teacher on {held:,} held-out texts (each "
                  "prefix of the student against the full-width teacher; overlap@10: shared nearest neighbours; "
                  "similarity Spearman: rank correlation of all pairwise similarities):", "",
                  "| prefix | overlap@10 | similarity Spearman |", "|---:|---:|---:|"]
        for d in dims:
            row = holdout.get(str(d), {})
            overlap, spearman = row.get("overlap@10", float("nan")), row.get("sim_spearman", float("nan"))
            lines.append(f"| {d} | {overlap:.3f} | {spearman:.3f} |")
    sts = summary.get("sts", {})
    if sts.get("student"):
        baseline = sts.get("teacher_rotated") or {}
        lines += ["", "STS Spearman x100 (the run's `--sts` pairs), beside the teacher cut to the same prefix "
                  "(in the rotated space the student is trained in):", "",
                  "| prefix | student | teacher prefix |", "|---:|---:|---:|"]
        for d in dims:
            s, t = sts["student"].get(str(d), {}), baseline.get(str(d), {})
            teacher = f"{t['spearman']:.1f}" if "spearman" in t else "n/a"
            lines.append(f"| {d} | {s.get('spearman', float('nan')):.1f} | {teacher} |")
    speed = summary.get("speed")
    if speed and "sentences_per_s" in speed:
        where = speed.get("student_device", speed.get("device", "?"))
        line = f"Speed: {speed['sentences_per_s']:,.0f} sentences/s on {where}"
        if speed.get("teacher_sentences_per_s"):
            line += (f", {speed.get('speedup', 0):,.1f}x the teacher's {speed['teacher_sentences_per_s']:,.0f} "
                     f"sentences/s on {speed.get('device', '?')}")
        lines += ["", f"{line} ({speed.get('texts', '?')} held-out texts, measured by the run)."]
    size = summary.get("size", {})
    if size.get("student_parameters"):
        lines += ["", f"Parameters: {size['student_parameters']:,}"
                  + (f" (the teacher's: {size['teacher_parameters']:,})." if size.get("teacher_parameters") else ".")]
    if summary.get("train_texts") is not None:
        lines += ["", f"Trained on {summary['train_texts']:,} texts; the whole run took "
                  f"{summary.get('seconds', 0):,.0f} s."]
    if not lines:
        return ["", "The run's summary holds no quality numbers (it had no held-out texts and no `--sts` pairs)."]
    return lines


def _usage(fmt: str, student: Student) -> list[str]:
    d = student.dims[-2] if len(student.dims) > 1 else student.dim  # the largest proper prefix
    out = ["## Usage", ""]
    if fmt == "native":
        out += ["With distill (`pip install distill`):", "", "```python", "import distill", "",
                'model = distill.load("path/to/this/folder")',
                f'vectors = model.encode(["A sentence to embed."], dim={d})  # L2-normalized, {d} dims', "```"]
    if fmt in ("sentence-transformers", "model2vec"):
        out += ["With sentence-transformers:", "", "```python", "from sentence_transformers import SentenceTransformer",
                "", f'model = SentenceTransformer("path/to/this/folder", truncate_dim={d})',
                'vectors = model.encode(["A sentence to embed."], normalize_embeddings=True)', "```", ""]
    if fmt == "model2vec" or (fmt == "sentence-transformers" and isinstance(student, StaticStudent)):
        norm = "" if fmt == "model2vec" else ", normalize=True"
        out += ["With Model2Vec (it drops unknown tokens ([UNK]) from a text, distill keeps them: texts without "
                "them get the same vectors):", "", "```python", "from model2vec import StaticModel", "",
                f'model = StaticModel.from_pretrained("path/to/this/folder", dimensionality={d}{norm})',
                'vectors = model.encode(["A sentence to embed."])', "```", ""]
    if fmt == "onnx":
        out += ["With onnxruntime (`model.onnx` takes padded `input_ids` and `attention_mask` and returns the "
                "full-width vector, L2-normalized; `tokenizer.json` pads already):", "", "```python",
                "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", "",
                'tokenizer = Tokenizer.from_file("tokenizer.json")',
                'session = ort.InferenceSession("model.onnx")',
                'enc = tokenizer.encode_batch(["A sentence to embed.", "Another one."])',
                "feeds = {\"input_ids\": np.array([e.ids for e in enc], dtype=np.int64),",
                "         \"attention_mask\": np.array([e.attention_mask for e in enc], dtype=np.int64)}",
                "full = session.run(None, feeds)[0]",
                f"x = full[:, :{d}] / np.linalg.norm(full[:, :{d}], axis=1, keepdims=True)  # the {d}-dim prefix",
                "```", ""]
    return out


def _prompts(student: Student, fmt: str) -> list[str]:
    """The card's line on the teacher's prompts, when the student records any."""
    prompts, default = student.prompts, student.config.default_prompt_name
    if not prompts:
        return []
    named = "; ".join(f"`{name}`: `{json.dumps(text)}`" for name, text in prompts.items())
    line = (f"- Prompts (the teacher's, put before a text): {named}. "
            + (f"Texts get `{default}` unless another is named: the training texts had it. " if default else
               "Texts get none unless one is named: the training texts had none. "))
    if fmt in ("native", "sentence-transformers"):
        line += 'Name one with `encode(texts, prompt_name="...")`.'
    else:
        line += "This format does not apply them: put the prompt's text before each text yourself."
    return [line]


def _architecture(student: Student) -> str:
    """What the student computes, in one clause."""
    c = student.config
    if isinstance(student, StaticStudent):
        return ("one vector and one learned pooling weight per token; a text is the weighted mean of its tokens' "
                "vectors (no layers: a table lookup)")
    if c.kind in ("layers", "conv"):
        kept = ", ".join(map(str, c.layers or []))
        text = (f"the teacher's own architecture keeping {len(c.layers or [])} of its layers ({kept}), initialised "
                f"from them, its {c.pooling} pooling, then a linear head to {c.dim} dims")
        if c.kind == "conv":
            text += (f"; after the first {c.merge_after} kept layer(s) a strided convolution merges every {c.merge} "
                     "token states into one, so the later layers attend over a sequence that many times shorter")
        return text
    return (f"a static table plus a small {c.n_layers}-layer, width-{c.width} encoder that adds a contextual "
            "correction to each token before the weighted mean")


def card_text(student: Student, summary: dict | None, fmt: str, dtype: str = "float32") -> str:
    """The card: YAML front matter as the Hugging Face hub reads it, then the text."""
    teacher = student.config.teacher or {}
    name = teacher.get("name")
    teacher_id = hub_id(name)
    license_ = teacher_license(teacher)
    kind_tag = "static-embeddings" if isinstance(student, StaticStudent) else "transformer"
    meta: dict = {"library_name": LIBRARY.get(fmt, fmt),
                  "tags": ["distill", "matryoshka", "embeddings", kind_tag, "sentence-similarity",
                           *([fmt] if fmt != "native" else [])]}
    if teacher_id:
        meta["base_model"] = teacher_id
    meta["license"] = license_ or "other"
    meta["pipeline_tag"] = "sentence-similarity"
    if teacher_id:
        teacher_text = f"[{teacher_id}](https://huggingface.co/{teacher_id})"
    elif name:
        teacher_text = f"a local model folder named `{Path(name).name}`"
    else:
        teacher_text = "an unrecorded teacher"
    what = _architecture(student)
    dims = student.dims
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# A {student.kind} Matryoshka student of {teacher_id or (Path(name).name if name else 'its teacher')}",
             "",
             f"Embeddings distilled from {teacher_text} with distill: a {student.kind} student, {what}.", "",
             f"- Width: {student.dim} dims. Nested prefix sizes: {', '.join(map(str, dims))}. Every prefix is an "
             "embedding of its own: keep the first `d` dims and re-normalize.",
             f"- Vocabulary: {student.config.vocab_size:,} tokens.",
             f"- Format: {FORMAT_TEXT.get(fmt, fmt)}; token tables stored as {DTYPE_TEXT.get(dtype, dtype)}.",
             *_prompts(student, fmt),
             "- License: " + (f"`{license_}`, the teacher's." if license_ else
                              "unknown: the teacher's license could not be determined here (`other` above); check "
                              "the teacher's terms before publishing this model."),
             "", "## Quality"]
    if summary:
        lines += _quality(summary, dims)
        if dtype != "float32":
            lines += ["", f"These numbers were measured on the float32 student; the {dtype} tables change them "
                      "slightly."]
    else:
        lines += ["", "No run summary was found beside this student, so no measured quality is given here: "
                  "`distill eval RUN` measures it."]
    lines += ["", *_usage(fmt, student)]
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(folder: str | Path, student: Student, summary: dict | None, fmt: str,
                     dtype: str = "float32") -> Path:
    """Write ``folder/README.md``: the model card of ``student`` exported as ``fmt``.

    :param summary: the run's ``summary.json`` (see :func:`distill.pipeline.folder.summary_of`), or None.
    :param fmt: native | sentence-transformers | model2vec | onnx (what the usage section shows).
    """
    path = Path(folder) / CARD_NAME
    path.write_text(card_text(student, summary, fmt, dtype), encoding="utf-8")
    return path
