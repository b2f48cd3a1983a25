"""Debian packages as a data source: fetch pinned .deb files (apt-get download, sha256 checks), extract them, and read
their machine-readable (DEP-5) copyright files.

The real-music builder (`real_music`) uses it on the packages its catalogue (`real_music_catalogue`) pins. A package
here is anything with the catalogue's archive fields: `name`, `version`, `sha256`, `size`, `pool_path`, `deb_file`
and `url`. `apt-get download` needs no root; without it (or without the archive) the files can come from a folder
(`--debs`).
"""
import fnmatch
import io
import os
from pathlib import Path
import re
import shutil
import subprocess
import tarfile
import typing as tp

from .common import sha256_file

DEBIAN_MIRROR = 'http://deb.debian.org/debian'


class DebianError(RuntimeError):
    """A package that cannot be fetched or extracted; the message says why and how to fix it."""


class FetchError(DebianError):
    """The .deb files could not be fetched or did not match their pinned sha256."""


def deb_file_name(name: str, version: str) -> str:
    """The file name `apt-get download NAME=VERSION` writes (an epoch's ':' is URL-escaped)."""
    return f"{name}_{version.replace(':', '%3a')}_all.deb"


def pool_url(pool_path: str) -> str:
    """The archive's URL of a pool path ("Filename:" of `apt-cache show`)."""
    return f'{DEBIAN_MIRROR}/{pool_path}'


# --------------------------------------------------------------------------------------------
# Fetching.
# --------------------------------------------------------------------------------------------
def fix_text(packages: tp.Sequence[tp.Any]) -> str:
    """The ways to get the pinned files when apt-get cannot, with the pins (for error messages)."""
    listing = '\n'.join(f'    {p.name}={p.version}  {p.url}  sha256 {p.sha256}' for p in packages)
    return (
        'Fix, one of:\n'
        '  - give apt-get the Debian archive: check the network and the apt sources (/etc/apt/sources.list or '
        '/etc/apt/sources.list.d/: a `deb http://deb.debian.org/debian bookworm main` line; `apt-get update` as '
        'root refreshes the package lists);\n'
        '  - or fetch the .deb files on another machine (`apt-get download NAME=VERSION`, or the URLs below) and '
        'pass their folder: `python -m audiocraft_mmd.data.real_music --debs DIR`;\n'
        '  - or work offline with the embedded preset (rendered scores, no download): `make dataset` '
        '(python -m audiocraft_mmd.data.embedded_music), dset=audio/embedded_music.\n'
        f'Pinned packages:\n{listing}')



def print_uris(packages: tp.Sequence[tp.Any]) -> tp.Dict[str, tp.Tuple[str, str, int, str]]:
    """What `apt-get download --print-uris NAME=VERSION` says: name -> (url, file name, size, sha256).
    Reads the local package lists only (no download). Raises FetchError if apt-get cannot resolve them."""
    apt = shutil.which('apt-get')
    if apt is None:
        raise FetchError('apt-get not found on PATH.\n' + fix_text(packages))
    proc = subprocess.run([apt, 'download', '--print-uris'] + [f'{p.name}={p.version}' for p in packages],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise FetchError(f'apt-get download --print-uris failed: {_tail(proc.stderr)}\n' + fix_text(packages))
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"'([^']+)' (\S+) (\d+) SHA256:([0-9a-f]{64})", line.strip())
        if m:
            name = m.group(2).split('_', 1)[0]
            out[name] = (m.group(1), m.group(2), int(m.group(3)), m.group(4))
    return out


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith('W: Download is performed')]
    return ' | '.join(lines[-n:]) or '(no message)'


def check_sha(path: Path, pkg: tp.Any) -> bool:
    """True when `path` is the pinned file of `pkg`: its size and sha256."""
    return path.is_file() and path.stat().st_size == pkg.size and sha256_file(path) == pkg.sha256


def _find_in_dir(folder: Path, pkg: tp.Any) -> tp.Optional[Path]:
    """A pre-downloaded .deb of `pkg` in `folder`: by apt's or the pool's file name, else by sha256."""
    names = [pkg.deb_file, Path(pkg.pool_path).name]
    for n in names:
        if (folder / n).is_file():
            return folder / n
    for cand in sorted(folder.glob(f'{pkg.name}_*.deb')):
        if check_sha(cand, pkg):
            return cand
    return None


def fetch_debs(packages: tp.Sequence[tp.Any], cache: tp.Union[str, Path],
               debs: tp.Optional[tp.Union[str, Path]] = None, verbose: bool = True) -> tp.Dict[str, Path]:
    """The verified .deb file of every package: from `debs` (a folder of pre-downloaded files) if given, else from
    `cache`, where the missing ones are fetched with `apt-get download NAME=VERSION` (no root needed).

    Returns:
        package name -> path of its .deb, whose sha256 matches the pinned one.
    Raises:
        FetchError: apt-get missing or failing, a file missing from `debs`, or a checksum mismatch; the message
            names the fixes (network / apt sources, `--debs DIR`, the offline embedded preset).
    """
    out: tp.Dict[str, Path] = {}
    if debs is not None:
        folder = Path(debs)
        for pkg in packages:
            path = _find_in_dir(folder, pkg)
            if path is None:
                raise FetchError(f'{pkg.deb_file} is not in --debs {folder}.\n' + fix_text([pkg]))
            if not check_sha(path, pkg):
                raise FetchError(f'{path}: size or sha256 differs from the pinned {pkg.name}={pkg.version} '
                                 f'(sha256 {pkg.sha256}); the file is corrupt or another version.\n'
                                 + fix_text([pkg]))
            out[pkg.name] = path
        return out
    cache = Path(cache)
    need = []
    for pkg in packages:
        path = cache / pkg.deb_file
        if check_sha(path, pkg):
            out[pkg.name] = path
        else:
            need.append(pkg)
    if not need:
        return out
    apt = shutil.which('apt-get')
    if apt is None:
        raise FetchError('apt-get not found on PATH (the real-music preset fetches Debian packages with it).\n'
                         + fix_text(need))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f'.download-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if verbose:
            mb = sum(p.size for p in need) / 1e6
            print(f"[real_music] apt-get download {' '.join(p.name for p in need)} ({mb:.0f} MB) -> {cache}",
                  flush=True)
        try:
            proc = subprocess.run([apt, 'download'] + [f'{p.name}={p.version}' for p in need], cwd=tmp,
                                  capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f'apt-get download failed: {exc}\n' + fix_text(need)) from exc
        if proc.returncode != 0:
            raise FetchError(f'apt-get download failed (exit code {proc.returncode}): {_tail(proc.stderr)}\n'
                             + fix_text(need))
        for pkg in need:
            got = tmp / pkg.deb_file
            if not got.is_file():
                raise FetchError(f'apt-get download wrote no {pkg.deb_file}: {_tail(proc.stderr)}\n'
                                 + fix_text([pkg]))
            if not check_sha(got, pkg):
                raise FetchError(f'{pkg.deb_file} from the archive has another sha256 than the pinned '
                                 f'{pkg.sha256}: the archive changed, the pin is out of date.\n' + fix_text([pkg]))
            os.replace(got, cache / pkg.deb_file)   # only verified files enter the cache
            out[pkg.name] = cache / pkg.deb_file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out



# --------------------------------------------------------------------------------------------
# Extracting.
# --------------------------------------------------------------------------------------------
def _extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files, folders and links that stay inside `dest` (tarfile's 'data' filter where this Python has
    it: 3.10.12+, 3.11.4+; else the same check by hand)."""
    try:
        tar.extractall(dest, filter='data')
        return
    except TypeError:   # a Python without extraction filters
        pass
    root = dest.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() else target
        if not (member.isfile() or member.isdir() or member.issym()) or root not in (target, *target.parents) \
                or root not in (link, *link.parents):
            raise DebianError(f'refusing to extract {member.name!r}: not a file, folder or link inside the tree')
    tar.extractall(dest)


def _extract_deb_python(deb: Path, dest: Path) -> None:
    """`dpkg-deb -x` without dpkg: a .deb is an ar archive whose `data.tar.*` member holds the files."""
    with open(deb, 'rb') as fp:
        if fp.read(8) != b'!<arch>\n':
            raise DebianError(f'{deb}: not a Debian package (no ar header)')
        while True:
            header = fp.read(60)
            if len(header) < 60:
                break
            member = header[:16].decode('ascii', 'replace').strip().rstrip('/')
            size = int(header[48:58].decode('ascii').strip())
            start = fp.tell()
            if member.startswith('data.tar'):
                if member.endswith('.zst'):
                    raise DebianError(f'{deb}: {member} is zstd-compressed, which Python cannot read: '
                                         'install dpkg (dpkg-deb)')
                with tarfile.open(fileobj=io.BytesIO(fp.read(size)), mode='r:*') as tar:
                    _extract_tar(tar, dest)
                return
            fp.seek(start + size + (size & 1))   # ar members are 2-byte aligned
    raise DebianError(f'{deb}: no data.tar member')


def extract_deb(deb: tp.Union[str, Path], dest: tp.Union[str, Path]) -> str:
    """Extract a .deb's files into `dest`. Returns the tool used ('dpkg-deb' or 'python')."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = shutil.which('dpkg-deb')
    if dpkg is not None:
        proc = subprocess.run([dpkg, '-x', str(deb), str(dest)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DebianError(f'dpkg-deb -x {deb} failed: {_tail(proc.stderr)}')
        return 'dpkg-deb'
    _extract_deb_python(Path(deb), dest)
    return 'python'



# --------------------------------------------------------------------------------------------
# Copyright: machine-readable (DEP-5) copyright files give per-file holders and licenses.
# --------------------------------------------------------------------------------------------
def parse_copyright(text: str) -> tp.Optional[tp.List[tp.Tuple[tp.List[str], tp.List[str], str]]]:
    """The `Files` paragraphs of a machine-readable Debian copyright file, in order, as
    (patterns, holders, license short name); None if the file is free-form (no `Format:` line)."""
    if not text.lstrip().startswith('Format:'):
        return None
    stanzas = []
    for para in re.split(r'\n[ \t]*\n', text):
        fields: tp.Dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (' ', '\t') and key is not None:
                fields[key] += '\n' + line.strip()
            elif ':' in line and not line.startswith('#'):
                key, value = line.split(':', 1)
                fields[key] = value.strip()
        if 'Files' in fields and fields.get('License', '').strip():
            holders = list(dict.fromkeys(ln.strip() for ln in fields.get('Copyright', '').splitlines()
                                         if ln.strip()))
            stanzas.append((fields['Files'].split(), holders, fields['License'].strip().splitlines()[0].strip()))
    return stanzas


def dep5_match(pattern: str, path: str) -> bool:
    """DEP-5 patterns are relative to the upstream source tree, not to the installed path: compare as many trailing
    path components as the pattern has (at most two: 'base/music/x.ogg' matches '.../0music.pk3/music/x.ogg')."""
    if pattern == '*':
        return True
    parts = pattern.split('/')[-2:]
    return fnmatch.fnmatchcase('/'.join(path.split('/')[-len(parts):]), '/'.join(parts))



def dep5_rights(stanzas: tp.Optional[tp.List[tp.Tuple[tp.List[str], tp.List[str], str]]],
                path: str) -> tp.Optional[tp.Tuple[tp.List[str], str]]:
    """(holders, license) of the LAST `Files` paragraph matching `path` (DEP-5's rule); None if none matches or
    the copyright file is free-form (`stanzas` None).

    Args:
        stanzas: `parse_copyright`'s result.
        path (str): the file's path in the package.
    """
    found = None
    for patterns, holders, license_ in stanzas or []:
        if any(dep5_match(p, path) for p in patterns):
            found = (holders, license_)
    return found
