"""Shared fixtures. The embedded music set is real audio rendered offline; `make test` builds it first."""
import os
import tempfile

import pytest

# XPs made by the tests go to a throw-away Dora folder, not the user's outputs/ (read when the main is imported).
os.environ['AUDIOCRAFT_MMD_DORA_DIR'] = tempfile.mkdtemp(prefix='audiocraft_mmd_tests_')


@pytest.fixture(scope='session')
def embedded_music():
    """The small embedded dataset's name, built on first use if `make dataset` has not run."""
    from audiocraft_mmd.data import embedded_music as builder
    if not builder.is_built('embedded_music'):
        builder.build(preset='small')
    return 'embedded_music'
