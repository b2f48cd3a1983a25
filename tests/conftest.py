"""Shared fixtures. The embedded music set is real audio rendered offline; `make test` builds it first."""
import pytest


@pytest.fixture(scope='session')
def embedded_music():
    """The small embedded dataset's name, built on first use if `make dataset` has not run."""
    from audiocraft_mmd.data import embedded_music as builder
    if not builder.is_built('embedded_music'):
        builder.build(preset='small')
    return 'embedded_music'
