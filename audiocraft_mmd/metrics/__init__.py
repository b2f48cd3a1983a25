"""Metrics of audiocraft_mmd (torch-only; importing this package does not import AudioCraft).

``PythonViSQOL`` imports the optional ``visqol`` package (visqol-python) only when instantiated.
"""
from .dependence import CodebookDependence, codebook_dependence
from .visqol import PythonViSQOL

__all__ = ['codebook_dependence', 'CodebookDependence', 'PythonViSQOL']
