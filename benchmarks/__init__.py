"""Speed and memory figures (``make bench``); not tests."""
