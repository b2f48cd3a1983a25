"""Where this package's checkout is: `REPO_ROOT`, defined once for the tools, the training main and the dataset
builders.

A leaf module (no imports from the package): the dataset builders need the root without `env`'s process defaults,
and `env` imports the dataset checker, which must not import it back.
"""
from pathlib import Path

# The checkout holding this package (it is used from a checkout or an editable install: `config/` sits next to it).
# Installed elsewhere, the package has no checkout: the working directory stands in for it.
REPO_ROOT = Path(__file__).resolve().parent.parent
if not (REPO_ROOT / 'config' / 'dset').is_dir():
    REPO_ROOT = Path.cwd()
