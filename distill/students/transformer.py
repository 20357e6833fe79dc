"""The transformer student: a static student plus a small bidirectional encoder as a residual.

Each token's state is its static row plus a contextual correction: ``E[t] + head(encoder(ids)[t])``,
and the text vector is the weighted mean of the token states, weights ``exp(log_weight[t])`` as in
the static student. The head starts at zero, so an untrained transformer student *is* the static
student it was initialised from (same init, same vectors), and training can only add context: word
order, negation, senses that one vector per token cannot hold. The same token states serve the
token-level loss (against the teacher's contextual states) and, pooled, the text-level losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from distill.students.base import ContextualStudent, StudentConfig


class Block(nn.Module):
    """Pre-norm transformer block with SDPA attention."""

    def __init__(self, width: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, c)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, c)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class TransformerStudent(ContextualStudent):
    kind = "transformer"

    def __init__(self, config: StudentConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.width)
        self.position_embedding = nn.Embedding(c.max_length, c.width)
        self.blocks = nn.ModuleList(Block(c.width, c.n_heads) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.dim)
        self.embedding = nn.Parameter(torch.zeros(c.vocab_size, c.dim))  # (V, D) static rows
        self.log_weight = nn.Parameter(torch.zeros(c.vocab_size))  # (V,) pooling weights
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        nn.init.zeros_(self.head.weight)  # start as the static student; context is learned on top
        nn.init.zeros_(self.head.bias)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        seqs = [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]
        limit = self.config.max_length
        # keep the closing special token when truncating, as the teacher's tokenizer does
        return [s if len(s) <= limit else s[:limit - 1] + s[-1:] for s in seqs]

    def token_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, D) token states: static row + contextual correction."""
        T = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding(torch.arange(T, device=ids.device))  # (B, T, W)
        attn = mask.bool()[:, None, None, :]  # (B, 1, 1, T): every query attends to real keys only
        for block in self.blocks:
            x = block(x, attn)
        return self.embedding[ids] + self.head(self.ln_f(x))  # (B, T, D)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pooled (B, D), token states (B, T, D))."""
        states = self.token_states(ids, mask)
        w = (self.log_weight[ids].exp() * mask.to(states.dtype)).unsqueeze(-1)  # (B, T, 1)
        return (states * w).sum(1) / w.sum(1).clamp(min=1e-12), states
