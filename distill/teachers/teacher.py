"""A teacher: a pretrained model that turns token ids or texts into dense target vectors."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.devices import resolve_device, teacher_dtype
from distill.errors import DistillError, choice
from distill.teachers.pooling import Pooling, pool
from distill.teachers.registry import TeacherSource, resolve_teacher
from distill.vectors import normalize

logger = logging.getLogger(__name__)

_WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|pt|pth)$")
_UNUSED_TOKEN = re.compile(r"^(\[unused\d+\]|<unused\d+>|<extra_id_\d+>|\[PAD\d*\])$")
_ST_POOLING = {
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_lasttoken": Pooling.LAST,
}


class TeacherKind(str, Enum):
    ENCODER = "encoder"  # BERT family
    DECODER = "decoder"  # GPT-2 / Llama family
    SENTENCE_TRANSFORMERS = "sentence-transformers"


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _WEIGHT_FILES.match(p.name))


def weights_fingerprint(folder: Path) -> str:
    """sha256 over every weights file of the folder (names and bytes), so changed weights change the key."""
    h = hashlib.sha256()
    for p in _weight_files(folder):
        h.update(str(p.relative_to(folder)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def fingerprint_cache_path() -> Path:
    """Where fingerprints are remembered: ``$DISTILL_CACHE`` or ``$XDG_CACHE_HOME/distill`` (``~/.cache/distill``)."""
    root = os.environ.get("DISTILL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "distill"
    return Path(root).expanduser() / "fingerprints.json"


def cached_fingerprint(folder: Path) -> str:
    """:func:`weights_fingerprint`, remembered per folder while its weights files keep their names, sizes
    and modification times (hashing bert-base's 440 MB costs seconds on every load otherwise)."""
    folder = folder.resolve()
    stamp = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in _weight_files(folder)]
    path = fingerprint_cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(folder))
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["fingerprint"]
    fingerprint = weights_fingerprint(folder)
    known[str(folder)] = {"stamp": stamp, "fingerprint": fingerprint}
    try:
        from distill.io import save_json

        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(path, known)
    except OSError as e:  # a read-only home only costs the hash next time
        logger.debug("could not remember the fingerprint in %s: %s", path, e)
    return fingerprint


def _is_decoder(config) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or [])
    return bool(getattr(config, "is_decoder", False)) or "CausalLM" in archs or "LMHead" in archs or (
        config.model_type in {"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3",
                              "phi", "phi3", "gemma", "gemma2", "gemma3", "olmo", "smollm3", "opt", "bloom"}
    )


@dataclass
class _STFolder:
    """What a sentence-transformers folder says about how it encodes."""

    transformer_dir: Path
    pooling: Pooling = Pooling.MEAN
    normalize: bool = False
    max_length: int | None = None
    lowercase: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None


def _read_st_folder(path: Path) -> _STFolder:
    """Read a sentence-transformers folder's modules, limits, casing and prompts.

    :raises DistillError: Dense modules or an unsupported pooling.
    """
    modules = json.loads((path / "modules.json").read_text())
    st = _STFolder(path)
    for m in modules:
        kind = m.get("type", "")
        if kind.endswith("Transformer"):
            st.transformer_dir = path / m.get("path", "")
        elif kind.endswith("Pooling"):
            cfg = json.loads((path / m["path"] / "config.json").read_text())
            modes = [p for key, p in _ST_POOLING.items() if cfg.get(key)]
            if len(modes) != 1:
                raise DistillError(f"unsupported sentence-transformers pooling in {path}: {cfg}")
            st.pooling = modes[0]
            if cfg.get("include_prompt") is False:  # prompt tokens attended to but not pooled
                raise DistillError(f"{path} pools without its prompt tokens (include_prompt: false), which distill "
                                   "does not do yet")
        elif kind.endswith("Normalize"):
            st.normalize = True
        elif kind.endswith("Dense"):
            raise DistillError(f"sentence-transformers Dense modules are not supported yet ({path})")
    for st_cfg in (st.transformer_dir / "sentence_bert_config.json", path / "sentence_bert_config.json"):
        if st_cfg.is_file():
            cfg = json.loads(st_cfg.read_text())
            st.max_length, st.lowercase = cfg.get("max_seq_length"), bool(cfg.get("do_lower_case", False))
            break
    top = path / "config_sentence_transformers.json"
    if top.is_file():
        cfg = json.loads(top.read_text())
        st.prompts = {str(k): str(v) for k, v in (cfg.get("prompts") or {}).items() if v}
        st.default_prompt_name = cfg.get("default_prompt_name") or None
    return st


def resolve_prompt(prompts: dict[str, str], default_name: str | None, name: str | None, where: str) -> str:
    """The prompt put before every text: ``name`` from the teacher's ``prompts`` ("none": no prompt;
    None: the teacher's default, as ``SentenceTransformer.encode`` applies it).

    :raises DistillError: a name the teacher does not define.
    """
    if name is None:
        return prompts.get(default_name, "") if default_name else ""
    if name == "none":
        return ""
    if name not in prompts:
        known = ", ".join(repr(k) for k in prompts) or "none"
        raise DistillError(f"the teacher {where} has no prompt named {name!r} (its prompts: {known}); "
                           "pass --prompt with one of those, or --prompt none")
    return prompts[name]


class Teacher:
    """Wraps a Hugging Face model with its tokenizer, pooling and layer choice.

    ``embed_*`` return raw pooled targets; ``encode`` follows the student contract (L2-normalized,
    optional prefix ``dim``) so a teacher can be indexed and compared like any student.
    """

    def __init__(self, source: TeacherSource, model, tokenizer, kind: TeacherKind, pooling: Pooling,
                 layer: int, normalize: bool, max_length: int, device: torch.device):
        self.source, self.model, self.tokenizer = source, model, tokenizer
        self.kind, self.pooling, self.layer, self.normalize = kind, pooling, layer, normalize
        self.max_length, self.device = max_length, device
        self.lowercase = False  # sentence-transformers' do_lower_case: texts are lower-cased before tokenizing
        self.prompt = ""  # put before every text (a sentence-transformers prompt)
        self.prompts: dict[str, str] = {}  # the prompts its config names (recorded by the students it teaches)
        self.prompt_name: str | None = None  # which of them is ``prompt`` (None: no prompt)
        self._fingerprint: str | None = None
        self._prefix, self._suffix = self._special_frame()
        self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters

    # ---- identity -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = cached_fingerprint(self.source.path)
        return self._fingerprint

    def identity(self) -> dict:
        """Everything that decides the teacher's outputs; part of every cache key."""
        return {"name": self.source.name, "weights": self.fingerprint, "kind": self.kind.value,
                "pooling": self.pooling.value, "layer": self.layer, "normalize": self.normalize,
                "max_length": self.max_length, "dim": self.dim, "dtype": str(self.dtype).removeprefix("torch."),
                "autocast": False, "lowercase": self.lowercase, **({"prompt": self.prompt} if self.prompt else {})}

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ---- tokens ---------------------------------------------------------------------------------
    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after the content ([CLS] … [SEP], <s> …)."""
        probe = "hello world"
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i:i + len(bare)] == bare:
                return list(full[:i]), list(full[i + len(bare):])
        return [], []

    def frame(self, content: list[int]) -> list[int]:
        return self._prefix + list(content) + self._suffix

    def vocab_context(self) -> list[int]:
        """Tokens put before a vocabulary token alone, attended to but not pooled.

        A decoder whose tokenizer adds no BOS (GPT-2) would see the token at position 0, where every
        input collapses onto the same attention-sink state: its targets would hardly differ from token
        to token. Inside a text a token comes after others, so it is given the model's document
        boundary (BOS, else EOS: ``<|endoftext|>`` for GPT-2) to attend to, as it would a text's start.
        Encoders and decoders that add a BOS themselves need nothing.
        """
        if self.kind is not TeacherKind.DECODER or self._prefix:
            return []
        for token_id in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return [int(token_id)]
        return []

    def vocab_seqs(self, ids) -> tuple[list[list[int]], int]:
        """Inputs for the vocabulary targets of ``ids`` and how many leading tokens not to pool."""
        context = self.vocab_context()
        prompt = (self.tokenizer(self.prompt.lower() if self.lowercase else self.prompt,
                                 add_special_tokens=False)["input_ids"] if self.prompt else [])
        return [context + self.frame(list(prompt) + [int(i)]) for i in ids], len(context)

    def word_seqs(self, words: list[str]) -> tuple[list[list[int]], int]:
        """Inputs for the whole-word targets of ``words`` and how many leading tokens not to pool: each word
        as a text (its pieces inside the special tokens and prompt), after the context a vocabulary token
        gets (:meth:`vocab_context`), so a whole word's row starts where its pieces' rows do."""
        context = self.vocab_context()
        seqs, _ = self.tokenize(list(words))
        return [context + s for s in seqs], len(context)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], int]:
        """Token ids with special tokens, truncated to the model's limit; returns (ids, n_truncated)."""
        room = self.max_length - len(self._prefix) - len(self._suffix)
        texts = [self.prompt + t for t in texts] if self.prompt else list(texts)
        texts = [t.lower() for t in texts] if self.lowercase else texts
        bare = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        n_truncated = sum(len(ids) > room for ids in bare)
        return [self.frame(ids[:room]) for ids in bare], n_truncated

    def vocab(self) -> tuple[np.ndarray, list[str]]:
        """Usable vocabulary: every token but the special and the never-trained ``[unusedN]`` ones."""
        special = set(self.tokenizer.all_special_ids)
        vocab = self.tokenizer.get_vocab()  # token string -> id
        pairs = sorted((i, t) for t, i in vocab.items() if i not in special and not _UNUSED_TOKEN.match(t))
        return np.array([i for i, _ in pairs], dtype=np.int64), [t for _, t in pairs]

    # ---- forward --------------------------------------------------------------------------------
    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad_id = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left"
        for row, s in enumerate(seqs):
            span = slice(width - len(s), width) if left else slice(0, len(s))
            ids[row, span] = torch.tensor(s, dtype=torch.long)
            mask[row, span] = 1
        return ids, mask

    @torch.inference_mode()
    def forward(self, seqs: list[list[int]], with_tokens: bool = False, skip: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One padded batch -> (pooled (B, D) float32, hidden (B, T, D) float16 or None, mask (B, T)), on the CPU.

        The hidden states cross to the host only when ``with_tokens`` asks for them (they are B x T
        times bigger than the pooled vectors), as float16, the dtype they are stored in. The first
        ``skip`` tokens of each sequence are attended to but left out of the pooling.
        """
        ids, mask = self._pad(seqs)
        ids = ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        kwargs = {}
        if self.tokenizer.padding_side == "left" and self._takes_position_ids:
            # Models with absolute positions (GPT-2, BERT) count positions from column 0, so a
            # left-padded text would start at position `width - len`: number real tokens from 0.
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=self.layer != -1, **kwargs)
        hidden = (out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]).float()  # (B, T, D)
        pool_mask = mask
        if skip:
            rank = mask.cumsum(1)  # (B, T) 1 at each sequence's first real token
            pool_mask = mask * (rank > skip)
        pooled = pool(hidden, pool_mask, self.pooling)  # (B, D)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        states = hidden.to(torch.float16).cpu() if with_tokens else None
        return pooled.cpu(), states, mask.cpu()

    def embed_ids(self, seqs: list[list[int]], batch_size: int = 64, with_tokens: bool = False,
                  progress: bool = False, desc: str = "teacher", skip: int = 0):
        """Pooled vectors (N, D) for token-id sequences, in input order.

        Sequences are sorted by length into batches so that padding stays small. With
        ``with_tokens`` also returns the contextual states of every sequence, ragged: a flat
        (sum of lengths, D) array and (N + 1,) offsets.
        """
        n = len(seqs)
        pooled = np.empty((n, self.dim), dtype=np.float32)
        states: list[np.ndarray | None] = [None] * n if with_tokens else []
        order = sorted(range(n), key=lambda i: -len(seqs[i]))
        left = self.tokenizer.padding_side == "left"
        with tqdm(total=n, unit="text", desc=desc, disable=not progress, leave=False) as bar:
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                p, hidden, _ = self.forward([seqs[i] for i in idx], with_tokens=with_tokens, skip=skip)
                pooled[idx] = p.numpy()
                if with_tokens:
                    width = hidden.shape[1]
                    for row, i in enumerate(idx):
                        span = slice(width - len(seqs[i]), width) if left else slice(0, len(seqs[i]))
                        states[i] = hidden[row, span].numpy()
                bar.update(len(idx))
        if not with_tokens:
            return pooled
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(states, axis=0) if n else np.empty((0, self.dim), np.float16)
        return pooled, flat, offsets

    def embed_texts(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        seqs, n_truncated = self.tokenize(texts)
        if n_truncated:
            logger.warning("%d of %d texts were longer than %d tokens and were truncated",
                           n_truncated, len(texts), self.max_length)
        return self.embed_ids(seqs, batch_size=batch_size, progress=progress)

    def encode(self, texts: list[str], dim: int | None = None, batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Student-style contract: L2-normalized vectors, optionally the first ``dim`` dims re-normalized."""
        if dim is not None and not 0 < dim <= self.dim:
            raise DistillError(f"dim must be in 1..{self.dim} for this teacher, got {dim}")
        return normalize(self.embed_texts(list(texts), batch_size=batch_size, progress=progress)[:, :dim])

    def vocab_targets(self, ids: np.ndarray, batch_size: int = 512, progress: bool = False) -> np.ndarray:
        """The teacher's pooled output for each token alone, inside the model's special tokens: (V, D)."""
        seqs, skip = self.vocab_seqs(ids)
        return self.embed_ids(seqs, batch_size=batch_size, progress=progress, desc="vocab", skip=skip)

    def input_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Raw input-embedding rows of the given token ids: (V, D_in)."""
        weight = self.model.get_input_embeddings().weight
        return weight[torch.as_tensor(ids, device=weight.device)].detach().float().cpu().numpy()


def load_teacher(spec: str | Path | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, pooling: str | Pooling | None = None, layer: int = -1,
                 max_length: int | None = None, prompt: str | None = None) -> Teacher:
    """Load a teacher from an alias, a Hugging Face id or a local folder.

    :param pooling: ``mean``/``cls`` for encoders (default mean), ``last``/``mean`` for decoders
        (default last: mean pooling lets a causal model's early tokens, which saw little, dominate).
        Sentence-transformers folders use their own pooling and normalization unless overridden.
    :param layer: which hidden layer to use (-1: the last).
    :param dtype: the weights' dtype; default bf16 on CUDA (fp16 where the card has no bf16), fp32
        elsewhere. It is part of the teacher's identity, so targets of another dtype are not mixed.
    :param prompt: a sentence-transformers teacher's prompt name to put before every text ("none": no
        prompt); default: its ``default_prompt_name``, as ``SentenceTransformer.encode`` does.
    :raises TeacherNotFoundError: when the model can be had neither locally nor from the hub.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = resolve_teacher(spec)
    device = resolve_device(device)
    st = _STFolder(source.path)
    if (source.path / "modules.json").is_file():
        kind = TeacherKind.SENTENCE_TRANSFORMERS
        st = _read_st_folder(source.path)
        default_pooling = st.pooling
    else:
        config = AutoConfig.from_pretrained(source.path)
        kind = TeacherKind.DECODER if _is_decoder(config) else TeacherKind.ENCODER
        default_pooling = Pooling.LAST if kind is TeacherKind.DECODER else Pooling.MEAN
    pooling = choice(Pooling, pooling, "pooling") if pooling is not None else default_pooling
    prompt_text = resolve_prompt(st.prompts, st.default_prompt_name, prompt, source.name)
    model_dir = st.transformer_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:  # GPT-2 and Llama ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    dtype = teacher_dtype(device, dtype)
    model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    limits = [st.max_length, max_length, getattr(model.config, "max_position_embeddings", None)]
    if 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    n_layers = model.config.num_hidden_layers
    if not -n_layers - 1 <= layer <= n_layers:
        raise DistillError(f"layer {layer} out of range for a {n_layers}-layer teacher")
    teacher = Teacher(source, model, tokenizer, kind, pooling, layer, st.normalize, min(x for x in limits if x),
                      device)
    teacher.lowercase, teacher.prompt = st.lowercase, prompt_text
    teacher.prompts = dict(st.prompts)
    if prompt_text:
        teacher.prompt_name = st.default_prompt_name if prompt is None else prompt
        logger.info("teacher %s: %r is put before every text (--prompt none to leave it out)", source.name,
                    prompt_text)
    return teacher
