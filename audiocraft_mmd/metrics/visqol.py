"""ViSQOL without the bazel-built binary, through the pure-Python ``visqol-python`` package.

AudioCraft's :class:`audiocraft.metrics.ViSQOL` shells out to Google's C++ ViSQOL, which has to be
built with bazel (``metrics.visqol.bin``). :class:`PythonViSQOL` keeps the same call,
``visqol(ref_sig, deg_sig, sr, pad_with_silence=False) -> mean MOS-LQO``, and the same input
preparation (torchaudio resampling to the mode's rate, clamping to +-0.99, 16-bit PCM, channels
averaged to mono), but scores in memory with ``visqol.VisqolApi.measure_from_arrays`` (no temp
files, no subprocess). The package is a port of ViSQOL v3.3.3 that matches the C++ conformance
values (see docs/visqol.md). It is imported lazily: the rest of ``audiocraft_mmd`` does not need it.

Install: ``pip install visqol-python==3.8.0 libsvm-official==3.37.0`` (both are in requirements.txt,
so ``make install`` installs them; libsvm-official is an sdist and needs a C++ compiler).
"""
import logging
import os
from pathlib import Path
import typing as tp

import torch

__all__ = ['PythonViSQOL']

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install visqol-python==3.8.0 libsvm-official==3.37.0"
# AudioCraft's config names this SVR model (metrics.visqol.model). Google's model/README.txt says
# the default model, libsvm_nu_svr_model.txt, "is the same as" it: the one visqol-python bundles.
_DEFAULT_MODEL_ALIASES = frozenset({'libsvm_nu_svr_model.txt',
                                    'tcdaudio14_aacvopus_coresv_svrnsim_n.68_g.01_c1.model'})


def _import_visqol() -> tp.Any:
    """Import the ``visqol`` package (visqol-python) or raise an ImportError that names the fix."""
    try:
        import visqol
        from visqol import VisqolApi  # noqa: F401  (fails too if libsvm-official is missing)
    except ImportError as exc:
        raise ImportError(
            f"PythonViSQOL needs the pure-Python ViSQOL package `visqol` ({exc}). Install it with "
            f"`{INSTALL_HINT}` (or `make install`, which installs requirements.txt)."
        ) from exc
    return visqol


class PythonViSQOL:
    """ViSQOL v3 in pure Python (package ``visqol-python``), with the call of AudioCraft's ViSQOL.

    ViSQOL compares a degraded signal with its reference and predicts a MOS-LQO (1 to 5).

    Audio Mode:
        Signals are resampled to 48 kHz (ViSQOL's audio model is trained on full-band 48 kHz audio;
        a 16 kHz signal is upsampled and has nothing above 8 kHz, in the reference and the degraded
        signal alike, so 7 of the 32 gammatone bands see silence: scores at different sample rates
        are not comparable). SVR quality mapping; identical signals score 4.732.

    Speech Mode:
        Signals are resampled to 16 kHz; voice-activity patch selection. The C++ default quality
        mapper (deep lattice) needs the optional ``ai-edge-litert`` package; without it
        visqol-python warns and uses the exponential polynomial mapping (C++
        ``--use_lattice_model=false``), scaled to a maximum MOS of 5.

    Multi-channel signals are averaged to mono, as the C++ ViSQOL does with AudioCraft's
    multi-channel temp WAV files.

    Args:
        mode (str): ViSQOL computation mode, "audio" or "speech".
        model (str, optional): SVR model (audio mode only): None or one of the names of the default
            model (``libsvm_nu_svr_model.txt`` or AudioCraft's configured
            ``tcdaudio14_aacvopus_coresv_svrnsim_n.68_g.01_c1.model``, the same file) uses the model
            bundled with visqol-python; anything else is a path to a libsvm model file.
        search_window (int): ViSQOL patch search window radius (C++ default 60).
        use_lattice_model (bool, optional): speech mode only: True requires the lattice mapper,
            False uses the polynomial one, None picks the lattice one if ai-edge-litert is installed.
        bin (str or Path, optional): accepted so that AudioCraft's ``metrics.visqol`` config
            (mode, bin, model) can be passed as is; must be None (a binary means
            ``audiocraft.metrics.ViSQOL``).
    """
    SAMPLE_RATES_MODES = {"audio": 48_000, "speech": 16_000}
    # Shortest clips visqol-python 3.8.0 scores (measured: audio mode fails at 0.9 s, speech mode at 0.6 s).
    MIN_DURATION = {"audio": 1.0, "speech": 0.7}

    def __init__(self, mode: str = "audio", model: tp.Optional[str] = None, search_window: int = 60,
                 use_lattice_model: tp.Optional[bool] = None,
                 bin: tp.Optional[tp.Union[str, Path]] = None):
        if bin is not None:
            raise ValueError(f"PythonViSQOL does not use a ViSQOL binary (got bin={bin!r}); "
                             "use audiocraft.metrics.ViSQOL for the C++ binary.")
        if mode not in self.SAMPLE_RATES_MODES:
            raise ValueError(f"Unsupported mode {mode!r}! Allowed are: {', '.join(self.SAMPLE_RATES_MODES)}")
        visqol = _import_visqol()
        self.visqol_mode = mode
        self.target_sr = self.SAMPLE_RATES_MODES[mode]
        self.model_path = self._resolve_model(model) if mode == 'audio' else None
        self.last_scores: tp.List[float] = []
        self._api = visqol.VisqolApi()
        self._api.create(mode=mode, model_path=self.model_path, search_window=search_window,
                         use_lattice_model=use_lattice_model)

    @staticmethod
    def _resolve_model(model: tp.Optional[str]) -> tp.Optional[str]:
        # None means the bundled default model (visqol-python picks it when model_path is None).
        if model is None or (os.path.basename(str(model)) in _DEFAULT_MODEL_ALIASES and not os.path.isfile(model)):
            return None
        if not os.path.isfile(model):
            raise FileNotFoundError(
                f"ViSQOL model {model!r} not found: pass None (bundled default, the same file as "
                f"AudioCraft's default tcdaudio14_aacvopus_coresv_svrnsim_n.68_g.01_c1.model) or a path "
                f"to a libsvm SVR model file.")
        return str(model)

    def _prepare(self, sig: torch.Tensor, sr: int, pad_with_silence: bool) -> tp.List[tp.Any]:
        """[B, C, T] tensor -> B mono float64 numpy arrays at the target rate, as AudioCraft's temp WAVs.

        Resampled with torchaudio's default Resample (as AudioCraft), optionally padded with 0.5 s of
        silence on each side, clamped to +-0.99, rounded to 16-bit PCM the way libsndfile writes and
        reads it (x -> round(32767 x) / 32768), then channels averaged (ViSQOL's mono downmix).
        """
        import numpy as np
        import torchaudio

        sig = sig.detach().to('cpu', torch.float32)
        if sig.dim() != 3:
            raise ValueError(f"Expects signals as [B, C, T], got shape {tuple(sig.shape)}")
        if sr != self.target_sr:
            sig = torchaudio.transforms.Resample(sr, self.target_sr)(sig)
        if pad_with_silence:
            pad = int(0.5 * self.target_sr)
            sig = torch.nn.functional.pad(sig, (pad, pad), mode='constant', value=0.)
        pcm = np.round(sig.clamp(-0.99, 0.99).numpy().astype(np.float64) * 32767.) / 32768.
        return [item.mean(axis=0) for item in pcm]

    def __call__(
        self,
        ref_sig: torch.Tensor,
        deg_sig: torch.Tensor,
        sr: int,
        pad_with_silence: bool = False,
    ) -> float:
        """Calculate the ViSQOL metric for a batch of pairs of audio signals at a given sample rate.

        Args:
            ref_sig (torch.Tensor): Reference signals as [B, C, T].
            deg_sig (torch.Tensor): Degraded signals as [B, C, T].
            sr (int): Sample rate of the two audio signals.
            pad_with_silence (bool): Whether to pad the signals with 0.5 s of silence on each side as
                recommended in the ViSQOL guidelines (https://github.com/google/visqol#general-guidelines-for-input).
                Unlike AudioCraft's ViSQOL, which only pads when it resamples, this always pads.
        Returns:
            float: The mean MOS-LQO over the batch (0.0 for an empty batch, as AudioCraft).
                The per-item scores are kept in ``self.last_scores``.
        """
        assert len(ref_sig) == len(deg_sig), (
            f"Expects same number of ref and degraded inputs but ref len {len(ref_sig)} != deg len {len(deg_sig)}")
        logger.debug("Calculating visqol with mode=%s on %d samples", self.visqol_mode, len(ref_sig))
        self.last_scores = []
        if len(ref_sig) == 0:
            return 0.0
        min_duration = self.MIN_DURATION[self.visqol_mode]
        duration = ref_sig.shape[-1] / sr + (1. if pad_with_silence else 0.)
        if duration < min_duration:
            raise ValueError(f"ViSQOL ({self.visqol_mode} mode) needs clips of at least {min_duration:g} s, got "
                             f"{duration:.2f} s: score longer audio, e.g. raise dataset.evaluate.segment_duration.")
        refs = self._prepare(ref_sig, sr, pad_with_silence)
        degs = self._prepare(deg_sig, sr, pad_with_silence)
        for ref, deg in zip(refs, degs):
            result = self._api.measure_from_arrays(ref, deg, sample_rate=self.target_sr)
            self.last_scores.append(float(result.moslqo))
        return sum(self.last_scores) / len(self.last_scores)
