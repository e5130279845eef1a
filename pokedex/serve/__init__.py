"""The HTTP service: ``create_app(ServeSettings(...))``; ``python -m pokedex.serve`` runs it with uvicorn."""

from pokedex.serve.app import create_app
from pokedex.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
