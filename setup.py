"""audiocraft_mmd: an independence-promoting loss for residual-VQ tokenizers, as an AudioCraft plugin.

AudioCraft itself is deliberately NOT in install_requires: its PyPI release pins torch 2.1 / av 11 and only its
source tarball carries the Hydra config tree. `make install` installs it editable, without its pins.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION: dict = {}
for line in (HERE / "audiocraft_mmd" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, VERSION)

setup(
    name='audiocraft_mmd',
    version=VERSION['__version__'],
    description='Independence-promoting MMD loss for EnCodec/MusicGen (arXiv 2406.02315), an AudioCraft plugin',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8') if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['audiocraft_mmd', 'audiocraft_mmd.*']),
    # The light, unpinned runtime needs; requirements.txt holds the tested pins (used by `make install`).
    install_requires=[
        'torch>=2.6', 'torchaudio>=2.6', 'numpy', 'soundfile', 'dora-search>=0.1.12', 'flashy>=0.0.2',
        'hydra-core>=1.3', 'omegaconf>=2.3', 'music21', 'pretty_midi', 'imageio-ffmpeg', 'pyloudnorm', 'scipy',
        'tqdm',
    ],
    extras_require={'dev': ['pytest']},
    license='MIT License',
)
