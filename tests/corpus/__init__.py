"""Corpora of bad input, shared by unit tests, integration tests and the fault suite."""
