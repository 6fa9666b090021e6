"""Command-line layer: one thin Typer command per stage."""
