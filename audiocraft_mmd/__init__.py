"""audiocraft_mmd: an independence-promoting loss for residual-VQ tokenizers (arXiv 2406.02315), an AudioCraft
plugin."""

__version__ = "0.1.0"
