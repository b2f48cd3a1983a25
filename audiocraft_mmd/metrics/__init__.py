"""Metrics of audiocraft_mmd (torch-only; importing this package does not import AudioCraft)."""
from .dependence import CodebookDependence, codebook_dependence

__all__ = ['codebook_dependence', 'CodebookDependence']
