"""govbus: the command line, the embedded runtime and the demo (the top layer)."""
