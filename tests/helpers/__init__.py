"""Importable test helpers (``from tests.helpers.images import png_bytes``); fixtures stay in conftest.py."""
