# audiocraft_mmd — install / demo / test entry points. Every target uses the virtual environment in $(VENV).
PYTHON ?= python3
VENV ?= .venv
AUDIOCRAFT_VERSION := 1.3.0
TINYSOUNDFONT_VERSION := 0.3.7

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
AC_SRC := $(VENV)/src/audiocraft-$(AUDIOCRAFT_VERSION)
# The venv's bin holds the `ffmpeg` link and `dora`: put it first on PATH for every target.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export USER ?= audiocraft_mmd

.PHONY: install dataset dataset-real demo test test-fast test-audiocraft bench clean-outputs

install:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip==26.3' 'setuptools==81.0.0' 'wheel==0.48.0'
	$(PIP) install -r requirements.txt -c constraints.txt
	@# AudioCraft: editable from its PyPI source tarball (only the tarball has config/), without its torch 2.1 pins.
	mkdir -p $(VENV)/src
	test -d $(AC_SRC) || ( $(PIP) download --no-deps --no-binary :all: audiocraft==$(AUDIOCRAFT_VERSION) -d $(VENV)/src \
		&& tar -xzf $(VENV)/src/audiocraft-$(AUDIOCRAFT_VERSION).tar.gz -C $(VENV)/src )
	$(PIP) install --no-deps --no-build-isolation -e $(AC_SRC)
	@# tinysoundfont declares pyaudio (does not build here); it renders without it.
	$(PIP) install --no-deps tinysoundfont==$(TINYSOUNDFONT_VERSION)
	$(PIP) install --no-deps --no-build-isolation -e .
	@# AudioCraft pipes every audio file it writes through `ffmpeg`: link the binary imageio-ffmpeg ships.
	ln -sf "$$($(PY) -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" $(VENV)/bin/ffmpeg
	@# torchaudio.load/save run on TorchCodec, whose wheel has no FFmpeg: point it at the one PyAV's wheel bundles.
	$(PY) -m audiocraft_mmd.torchcodec_ffmpeg
	$(PY) -m audiocraft_mmd.doctor

dataset:
	$(PY) -m audiocraft_mmd.data.embedded_music --preset small

# Real recordings (optional): pinned Debian game-soundtrack packages fetched with apt-get (no root), ~5 h of audio.
dataset-real:
	$(PY) -m audiocraft_mmd.data.real_music

demo: dataset
	$(PY) -m audiocraft_mmd.demo

test: dataset
	$(PY) -m pytest -q tests

test-fast:
	$(PY) -m pytest -q -m "not slow" tests

# AudioCraft's own test suite, from its extracted sdist, on the installed stack: a compatibility check of the pins.
# `-c setup.cfg --rootdir .`: AudioCraft's settings, not this repo's pytest.ini (pytest would find it above the venv).
# Nothing is deselected: all 221 tests pass offline on 2 CPU cores (test_audio_write_wav needs torchaudio.load,
# i.e. TorchCodec with FFmpeg: see the install step above).
test-audiocraft:
	cd $(AC_SRC) && $(abspath $(PY)) -m pytest -q -p no:cacheprovider -c setup.cfg --rootdir . tests

bench:
	$(PY) bench/bench_estimators.py --device cpu

clean-outputs:
	rm -rf outputs
