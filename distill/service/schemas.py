"""Request bodies. Strict types: ``"5"`` is not a number and ``5`` is not a text (422, not a guess)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request. ``model`` may be left out; ``user`` is accepted and ignored.

    Two extensions for texts past a contextual student's limit: ``truncate`` (default true: cut them and
    count the cuts in ``usage``; false: a 400) and ``long`` (``"chunk"``: embed them in overlapping windows).
    ``input_type`` (``"query"`` or ``"document"``, as hosted embedding APIs name it) puts the model's prompt
    of that kind before each text; left out, the model's default prompt (see ``/v1/models``).
    """

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr | None = None
    dimensions: StrictInt | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = None
    truncate: StrictBool = True
    long: Literal["truncate", "chunk"] = "truncate"
    input_type: Literal["query", "document"] | None = None


class SearchRequest(BaseModel):
    """``query`` (one text) or ``queries`` (several): the ``k`` nearest texts of the index at ``dimensions``.

    ``input_type``, ``truncate`` and ``long`` act on the queries as on ``/v1/embeddings``' inputs.
    """

    model_config = ConfigDict(extra="ignore")

    query: StrictStr | None = None
    queries: list[StrictStr] | None = None
    k: StrictInt = 10
    dimensions: StrictInt | None = None
    model: StrictStr | None = None
    input_type: Literal["query", "document"] | None = None
    truncate: StrictBool = True
    long: Literal["truncate", "chunk"] = "truncate"
