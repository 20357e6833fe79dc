"""Shared fixtures: tiny random teachers (BERT, GPT-2, Llama) and a synthetic corpus, all offline.

The models are built once per session into a temporary folder, so any test file can reuse them.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread (here and in subprocesses): on a shared 2-core machine, 2 OpenMP threads made a
# tiny model's forward pass ~200x slower (267 ms vs 1.4 ms) whenever another job held a core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Remembered teacher fingerprints go to a throwaway folder, not the user's ~/.cache/distill.
os.environ.setdefault("DISTILL_CACHE", __import__("tempfile").mkdtemp(prefix="distill-cache-"))

import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_SUBJECTS = ["the cat", "a dog", "my neighbour", "the old man", "a young girl", "the teacher", "our team",
             "the river", "a small bird", "the engineer", "her brother", "the city council"]
_VERBS = ["sees", "likes", "paints", "follows", "builds", "remembers", "describes", "crosses", "finds",
          "answers", "visits", "sells"]
_OBJECTS = ["a red house", "the long bridge", "an apple", "the quiet garden", "three letters", "the market",
            "a strange noise", "the new machine", "an empty room", "the winter sky", "a blue boat", "the map"]
_TAILS = ["", "", "today", "in the morning", "before the storm", "with great care", "near the station",
          "for the first time", "again and again", "without a word", "after dinner, slowly and happily"]


def synthetic_sentences(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` varied, deterministic sentences of 3 to ~25 words (some repeated twice for length variety)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
        if i % 7 == 0:  # a few longer sentences so that batches have different lengths
            words += ["and", rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
        s = " ".join(w for w in words if w)
        out.append(s[0].upper() + s[1:] + ("?" if i % 11 == 0 else "."))
    return out


def _bert_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]"]
    words = sorted({w for part in _SUBJECTS + _VERBS + _OBJECTS + _TAILS for w in part.split()})
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-")
    return specials + chars + [f"##{c}" for c in chars] + [w.strip(",") for w in words if w.strip(",") not in chars]


def _train_bpe(texts: list[str], specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    return synthetic_sentences(200)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_texts) -> Path:
    """A .txt corpus of 200 synthetic sentences, one per line."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(tiny_texts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random-init BERT (hidden 32, 2 layers, 2 heads) with a small WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(_bert_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_texts) -> Path:
    """A random-init GPT-2 (n_embd 32, 2 layers) with a tiny byte-level BPE tokenizer (no pad token)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_bpe(tiny_texts, ["<|endoftext|>"]),
                                        bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", model_max_length=128)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_texts) -> Path:
    """A random-init Llama (hidden 32, 2 layers, 4 heads, 2 kv heads); its tokenizer puts <s> first."""
    import torch
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = _train_bpe(tiny_texts, ["<unk>", "<s>", "</s>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=128)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=bos, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def forward_calls(monkeypatch) -> list[int]:
    """Counts the teacher's forward passes: one entry (the batch size) per call."""
    from distill.teachers.teacher import Teacher

    calls: list[int] = []
    original = Teacher.forward

    def counting(self, seqs, **kwargs):
        calls.append(len(seqs))
        return original(self, seqs, **kwargs)

    monkeypatch.setattr(Teacher, "forward", counting)
    return calls
