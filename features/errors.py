"""Errors that mean *the user's input is wrong*: the CLI exits 2 and the API answers 4xx."""

from __future__ import annotations


class InputError(ValueError):
    """A user mistake (bad file, bad option, bad value) with a message that says what to fix."""
