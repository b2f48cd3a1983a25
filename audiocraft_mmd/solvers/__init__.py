"""Solvers of audiocraft_mmd (import the submodules directly: they pull in AudioCraft)."""
