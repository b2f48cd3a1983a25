"""The committed example manifest loads in AudioCraft's MusicGen dataset, sidecars included."""
import json
from pathlib import Path

from audiocraft_mmd.env import REPO_ROOT


def test_example_manifest_loads_with_its_sidecars(monkeypatch):
    from audiocraft.data.music_dataset import MusicDataset
    monkeypatch.chdir(REPO_ROOT)  # relative paths, as in AudioCraft's egs/example
    dataset = MusicDataset.from_meta('egs/example', segment_duration=1., sample_rate=32000, channels=1,
                                     num_samples=4, return_info=True, shuffle=False)
    assert len(dataset.meta) == 2
    wav, info = dataset[0]
    assert tuple(wav.shape) == (1, 32000) and wav.abs().max() > 0
    sidecar = json.loads(Path(info.meta.path).with_suffix('.json').read_text())
    assert info.description == sidecar['description'] and 'chorale' in info.description
