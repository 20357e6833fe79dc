"""The embedding service: OpenAI-compatible ``/v1/embeddings`` with ``dimensions``, plus ``/v1/search``.

``create_app(settings)`` builds the FastAPI app; ``distill serve`` runs it under uvicorn.
"""

from distill.service.app import create_app
from distill.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
