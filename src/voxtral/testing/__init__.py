"""Test support: random-weight Voxtral checkpoints in the real file formats."""
