"""``distill serve``: registered in distill/cli.py. Parses flags, builds the settings, runs uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from distill.errors import DistillError

logger = logging.getLogger("distill")


def serve(
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Student folder (env DISTILL_MODEL).")] = None,
    index: Annotated[Path | None, typer.Option(help="Index folder built with this student, for /v1/search "
                                               "(env DISTILL_INDEX).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    model_name: Annotated[str | None, typer.Option(help="Name clients pass as `model` (default: the folder "
                                                   "name).")] = None,
    batching: Annotated[bool | None, typer.Option("--batching/--no-batching", help="Merge concurrent requests "
                                                  "into one forward pass (default on).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Texts per forward pass (default 256).")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="How long a pass waits for more requests "
                                                      "(default 2 ms).")] = None,
    max_inputs: Annotated[int | None, typer.Option(help="Inputs per request (default 2048).")] = None,
    max_input_chars: Annotated[int | None, typer.Option(help="Characters per input (default 16384).")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Request body size (default 16 MiB).")] = None,
    access_log: Annotated[bool | None, typer.Option("--access-log/--no-access-log",
                                                    help="Log every request (default on).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... for contextual students (default: "
                                               "best available; static students run on the CPU).")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes sharing the port, each with its own "
                                                "student (default 1): one process uses one core at most.")] = None,
) -> None:
    """Serve a student behind an OpenAI-compatible API: /v1/embeddings (with `dimensions`), /v1/search,
    /health, /v1/models, /metrics.

    Every option can also be set as a DISTILL_* environment variable (DISTILL_MODEL, DISTILL_MAX_BATCH, ...);
    flags win. Set the API key with DISTILL_API_KEY (then /v1/* needs `Authorization: Bearer KEY`).
    """
    import uvicorn
    from pydantic import ValidationError

    from distill.service import ServiceSettings, create_app
    from distill.service.searcher import open_index
    from distill.students import load_student

    flags = {"model": model, "index": index, "host": host, "port": port, "model_name": model_name,
             "batching": batching, "max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_inputs": max_inputs,
             "max_input_chars": max_input_chars, "max_body_bytes": max_body_bytes, "access_log": access_log,
             "device": device, "workers": workers}
    try:
        settings = ServiceSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        if any(err["loc"] == ("model",) and err["type"] == "missing" for err in e.errors()):
            raise DistillError("no student to serve: pass --model STUDENT_DIR or set DISTILL_MODEL") from None
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise DistillError(f"bad service settings: {problems}") from None
    # load and check here, so a wrong folder is a one-line error instead of a failed-startup traceback
    from distill.devices import resolve_device

    student = load_student(settings.model, device=resolve_device(settings.device))
    if settings.index is not None:
        from distill.index.models import model_identity

        open_index(settings.index, model_identity(student)).close()
    if settings.workers == 1:
        uvicorn.run(create_app(settings, student=student), host=settings.host, port=settings.port,
                    access_log=settings.access_log, log_level="info")
        return
    del student  # each worker loads its own; this process only supervises them
    os.environ.update(settings.environment())
    logger.info("starting %d worker processes", settings.workers)
    uvicorn.run("distill.service.app:app_from_environment", factory=True, workers=settings.workers,
                host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info")
