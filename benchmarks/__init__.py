"""Roost's benchmark suite: ``scripts/bench`` runs it (see README.md here)."""
