"""``python -m pipecast``."""

from pipecast.cli import app

app(prog_name="pipecast")
