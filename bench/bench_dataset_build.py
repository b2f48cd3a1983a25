"""Dataset builder: the library calls (music21, pyloudnorm) against the copies they replaced, and old vs new builds.

    # CPU time of each step, old code (from git) vs the working tree vs the library's call (expand_lib:
    # Score.expandRepeats, notes_lib: stripTies), summed over the small preset's candidates and over the N
    # largest quartet movements of the large preset; also checks that notes, keys and loudness agree
    python bench/bench_dataset_build.py steps [--old-rev 4334ea5] [--quartets 6]

    # what changed between two builds of the same preset (built with `--out`, see docs/dataset.md)
    python bench/bench_dataset_build.py compare OLD_ROOT NEW_ROOT [--name embedded_music]

One process, one thread: the CPU times are per piece, whatever else runs on the machine.
"""
import argparse
import hashlib
import importlib.util
import json
from pathlib import Path
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _old_module(rev: str):
    text = subprocess.run(['git', 'show', f'{rev}:audiocraft_mmd/data/embedded_music.py'], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / 'embedded_music_old.py'
    path.write_text(text)
    spec = importlib.util.spec_from_file_location('embedded_music_old', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu(fn, *args, **kwargs):
    t = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t


def _notes_strip_ties(score):
    """`_collect_notes` with music21's `stripTies` merging the ties (fermatas left out)."""
    from music21 import chord
    out = []
    for pi, part in enumerate(score.parts):
        for el in part.flatten().stripTies(matchByPitch=True).notes:
            ql = float(el.quarterLength)
            if ql <= 0:
                continue
            on = float(el.offset)
            for n in (el.notes if isinstance(el, chord.Chord) else [el]):
                out.append((on, on + ql, pi, int(n.pitch.midi)))
    return sorted(n for n in out if 0 <= n[3] <= 127)


def steps(opts) -> None:
    from music21 import converter
    from audiocraft_mmd.data import embedded_music as new
    old = _old_module(opts.old_rev)
    pieces = new.preset_pieces('small')
    cdir = new._corpus_dir()
    quartets = sorted(new.list_quartet_movements(), key=lambda p: -(cdir / p).stat().st_size)[:opts.quartets]
    steps_ = ('parse', 'expand_old', 'expand_new', 'expand_lib', 'notes', 'notes_lib', 'key_old', 'key_new', 'lufs_old',
              'lufs_new')
    groups = {'small preset': {k: 0.0 for k in steps_}, 'quartets': {k: 0.0 for k in steps_}}
    key_diff, note_diff, ties_diff, lib_diff, lufs_diff, failures = [], [], [], [], [], []
    rng = np.random.default_rng(0)
    for path in pieces + quartets:
        totals = groups['small preset' if path in pieces else 'quartets']
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            score, t = _cpu(converter.parse, str(new._resolve_score(path)), forceSource=True)
            totals['parse'] += t
            try:
                exp_lib, t_lib = _cpu(score.expandRepeats)      # the library's whole-score call (deep copies)
                exp_old, t_old = _cpu(old._expand_repeats, converter.parse(str(new._resolve_score(path)),
                                                                             forceSource=True))
                exp_new, t_new = _cpu(new._expand_repeats, score)
            except Exception as exc:  # noqa: BLE001
                failures.append((path, f'{type(exc).__name__}: {exc}'[:100]))
                continue
            totals['expand_old'] += t_old
            totals['expand_new'] += t_new
            totals['expand_lib'] += t_lib
            if old._collect_notes(exp_lib, False)[0] != old._collect_notes(exp_old, False)[0]:
                lib_diff.append(path)
            coll = new.collection_of(path)
            notes_old, _ = old._collect_notes(exp_old, coll == 'chorale')
            (notes_new, _), t = _cpu(new._collect_notes, exp_new, coll == 'chorale')
            totals['notes'] += t
            notes_lib, t = _cpu(_notes_strip_ties, exp_new)
            totals['notes_lib'] += t
            if notes_old != notes_new:
                note_diff.append(path)
            if notes_lib != notes_new:
                ties_diff.append(path)
            k_old, t = _cpu(old.estimate_key, notes_old)
            totals['key_old'] += t
            k_new, t = _cpu(new._estimate_key, exp_new)
            totals['key_new'] += t
            if tuple(k_old) != tuple(k_new):
                key_diff.append((path, ' '.join(k_old), ' '.join(k_new)))
        # loudness on noise shaped like a piece of the same length (the meter's cost depends on the length only)
        seconds = notes_new[-1][1] * 0.8 + 1.6
        x = (rng.standard_normal(int(seconds * 32000)) * np.linspace(0.05, 0.3, int(seconds * 32000)))
        l_old, t = _cpu(old.integrated_loudness, x.astype(np.float32), 32000)
        totals['lufs_old'] += t
        l_new, t = _cpu(new.integrated_loudness, x.astype(np.float32), 32000)
        totals['lufs_new'] += t
        lufs_diff.append(abs(l_old - l_new))
    n = len(pieces) + len(quartets) - len(failures)
    print(f"{n} pieces ({len(pieces)} small-preset candidates + {len(quartets)} largest quartet movements), "
          f"{len(failures)} failed to expand: {failures}")
    print(f"  {'step':<11} " + ' '.join(f'{g:>13}' for g in groups))
    for k in steps_:
        print(f"  {k:<11} " + ' '.join(f'{groups[g][k]:11.2f} s' for g in groups))
    print(f"  notes differ (old vs new expansion): {len(note_diff)} {note_diff}")
    print(f"  notes differ (Expander per part vs Score.expandRepeats): {len(lib_diff)} {lib_diff}")
    print(f"  notes differ (own tie merge vs music21 stripTies): {len(ties_diff)} {ties_diff}")
    print(f"  keys differ: {len(key_diff)}")
    for row in key_diff:
        print(f"    {row[0]}: {row[1]} -> {row[2]}")
    print(f"  |LUFS old - new| max {max(lufs_diff):.2e} LU")


def _sidecars(root: Path, name: str) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (root / 'dataset' / name).rglob('*.json')}


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(opts) -> None:
    import soundfile as sf
    old_root, new_root = Path(opts.old), Path(opts.new)
    a, b = _sidecars(old_root, opts.name), _sidecars(new_root, opts.name)
    from audiocraft_mmd.data import common
    info_a = common.read_record(opts.name, old_root)['summary']  # either record name: the old build may predate it
    info_b = common.read_record(opts.name, new_root)['summary']
    print(f"pieces old {len(a)}, new {len(b)}; only old: {sorted(set(a) - set(b))}, "
          f"only new: {sorted(set(b) - set(a))}")
    print(f"failed old {[f['piece'] for f in info_a['failed']]}, new {[f['piece'] for f in info_b['failed']]}")
    print(f"build time old {info_a['elapsed_s']} s, new {info_b['elapsed_s']} s (workers {info_a.get('workers')}, "
          f"{info_b.get('workers')})")
    splits = {s: (info_a['splits'][s]['pieces_list'], info_b['splits'][s]['pieces_list']) for s in info_a['splits']}
    print(f"same split assignment: {all(x == y for x, y in splits.values())}")
    common = sorted(set(a) & set(b))
    fields = sorted({k for s in common for k in a[s]} | {k for s in common for k in b[s]})
    changed = {f: [s for s in common if a[s].get(f) != b[s].get(f)] for f in fields}
    for f, stems in changed.items():
        if stems:
            print(f"  sidecar field {f!r} differs in {len(stems)} pieces")
    if not any(changed.values()):
        print(f"  sidecars: all {len(fields)} fields identical in all {len(common)} pieces")
    for s in changed.get('key', []):
        print(f"    key {s}: {a[s]['key']} -> {b[s]['key']}")
    gain = [abs(a[s]['gain_db'] - b[s]['gain_db']) for s in common]
    dur = [abs(a[s]['duration'] - b[s]['duration']) for s in common]
    print(f"  |gain_db old - new| max {max(gain):.3f} dB; |duration old - new| max {max(dur):.4f} s")
    same_audio, max_lsb, diff_samples = 0, 0, 0
    for s in common:
        pa = next((old_root / 'dataset' / opts.name).rglob(f'{s}.wav'))
        pb = next((new_root / 'dataset' / opts.name).rglob(f'{s}.wav'))
        if _hash(pa) == _hash(pb):
            same_audio += 1
            continue
        xa, _ = sf.read(str(pa), dtype='int16')
        xb, _ = sf.read(str(pb), dtype='int16')
        if len(xa) != len(xb):
            print(f"    {s}: length {len(xa)} -> {len(xb)} samples")
            continue
        d = np.abs(xa.astype(np.int32) - xb.astype(np.int32))
        max_lsb = max(max_lsb, int(d.max()))
        diff_samples += int((d > 0).sum())
    print(f"  audio byte-identical in {same_audio} of {len(common)} pieces; elsewhere max difference {max_lsb} LSB, "
          f"{diff_samples} samples differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('steps')
    p.add_argument('--old-rev', default='4334ea5', help="commit holding the copies (default: before the change)")
    p.add_argument('--quartets', type=int, default=6)
    p = sub.add_parser('compare')
    p.add_argument('old')
    p.add_argument('new')
    p.add_argument('--name', default='embedded_music')
    opts = parser.parse_args()
    steps(opts) if opts.cmd == 'steps' else compare(opts)


if __name__ == '__main__':
    main()
