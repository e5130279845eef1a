"""Cloud jobs: a Vertex AI CustomJob for training (``python -m pokedex.cloud train``) and its secret handling."""
