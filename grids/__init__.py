"""Dora grids of audiocraft_mmd: `dora grid NAME` from the repository root (see docs/grids.md)."""
