"""The HTTP inference service: ``python -m pokedex.serve model_path=PATH``; ``create_app`` for tests."""

from pokedex.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
