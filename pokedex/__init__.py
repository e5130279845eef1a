"""pokedex: a Pokémon image classifier you can train, sweep, reproduce and serve."""

__version__ = "0.1.0"
