"""Request bodies. Strict types: ``"5"`` is not a number and ``5`` is not a text (422, not a guess)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request. ``model`` may be left out; ``user`` is accepted and ignored.

    Two extensions for texts past a contextual student's limit: ``truncate`` (default true: cut them and
    count the cuts in ``usage``; false: a 400) and ``long`` (``"chunk"``: embed them in overlapping windows).
    """

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr | None = None
    dimensions: StrictInt | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = None
    truncate: StrictBool = True
    long: Literal["truncate", "chunk"] = "truncate"


class SearchRequest(BaseModel):
    """``query`` (one text) or ``queries`` (several): the ``k`` nearest texts of the index at ``dimensions``."""

    model_config = ConfigDict(extra="ignore")

    query: StrictStr | None = None
    queries: list[StrictStr] | None = None
    k: StrictInt = 10
    dimensions: StrictInt | None = None
    model: StrictStr | None = None
