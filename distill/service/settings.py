"""Service settings: one object, built once from flags and ``DISTILL_*`` environment variables.

Nothing reads the environment at import time: ``ServiceSettings()`` does, when the CLI (or a test)
builds it. Keyword arguments win over the environment, so command-line flags override it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", protected_namespaces=(), frozen=True)

    model: Path = Field(description="Student folder (or a run folder holding student/).")
    index: Path | None = Field(None, description="Index folder built with the same student, for /v1/search.")
    model_name: str | None = Field(None, description="Name clients pass as `model` (default: the folder name).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(None, description="When set, /v1/* requires `Authorization: Bearer KEY`.")
    access_log: bool = True
    workers: int = Field(1, ge=1, description="Server processes, each with its own copy of the student, sharing the "
                         "port: one Python process tokenizes and answers HTTP on one core at most.")
    device: str | None = Field(None, description="Where a contextual student runs: cpu, cuda, cuda:1 (default: "
                               "the best available). Static students run on the CPU.")

    # dynamic batching: concurrent requests are merged into one forward pass
    batching: bool = Field(True, description="Merge concurrent requests; off: one request per forward pass.")
    max_batch: int = Field(256, ge=1, description="Texts per forward pass (a bigger request is split).")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a forward pass waits for more requests.")
    max_batch_tokens: int = Field(512, ge=1, description="Padded tokens per transformer forward chunk.")
    max_pending: int = Field(16_384, ge=1, description="Texts queued or in a forward pass at most; past it -> 503.")
    request_timeout_s: float = Field(30.0, gt=0, description="Longest wait for a forward pass -> 503.")
    max_concurrent: int = Field(256, ge=1, description="Requests to /v1/embeddings and /v1/search handled at once; "
                                "past it -> 503 before the body is read, so that an overload is refused cheaply.")
    target_latency_s: float | None = Field(None, gt=0, description="Under overload, take only as many requests at "
                                           "once as are answered within this (90th percentile); the rest -> 503 "
                                           "at once. Default: a quarter of request_timeout_s.")

    # limits: a request past one of these is refused, never half-served
    max_inputs: int = Field(2048, ge=1, description="Inputs (or queries) per request -> 413.")
    max_input_chars: int = Field(16_384, ge=1, description="Characters per text input -> 422.")
    max_input_tokens: int = Field(8192, ge=1, description="Ids per token-id input -> 422.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Request body size -> 413.")
    max_k: int = Field(100, ge=1, description="Largest `k` of /v1/search -> 422.")

    @model_validator(mode="after")
    def _a_full_request_fits(self) -> ServiceSettings:
        if self.max_pending < self.max_inputs:
            raise ValueError(f"max_pending ({self.max_pending}) must be at least max_inputs ({self.max_inputs}), "
                             "or the largest request allowed could never be served")
        return self

    @property
    def admission_target_s(self) -> float:
        return self.target_latency_s if self.target_latency_s is not None else self.request_timeout_s / 4

    def environment(self) -> dict[str, str]:
        """These settings as ``DISTILL_*`` variables: how ``--workers`` hands them to the worker processes,
        which build their own ``ServiceSettings()`` from the environment."""
        out = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[f"DISTILL_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return out

    @property
    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        folder = self.model.resolve()
        return folder.parent.name if folder.name == "student" and folder.parent.name else folder.name
