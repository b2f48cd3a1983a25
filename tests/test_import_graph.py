"""No two modules of the package (audiocraft_mmd/, grids/) import each other, directly or through a loop.

The graph is read from the source (ast), not from `sys.modules`: an import inside a function counts as much as one
at the top of a module (it runs as soon as the function does), relative imports are resolved, and `from pkg import
name` counts as an import of `pkg.name` when that is a module. Dynamic imports (`importlib.import_module`) are not
seen.
"""
import ast
from pathlib import Path
import typing as tp

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ('audiocraft_mmd', 'grids')

Edge = tp.Tuple[str, str, str]  # (importer, imported, 'path:line' of the import statement)


def module_files(root: Path, packages: tp.Sequence[str]) -> tp.Dict[str, Path]:
    """Module name -> file, for every .py file under `root/<package>` (a package is its `__init__.py`).

    Args:
        root (Path): the folder holding the packages.
        packages (list of str): top-level package folders.
    Returns:
        e.g. {'audiocraft_mmd.data.check': Path('.../audiocraft_mmd/data/check.py'), ...}.
    """
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob('*.py')):
            parts = list(path.relative_to(root).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts.pop()
            modules['.'.join(parts)] = path
    return modules


def _resolve(name: str, modules: tp.Collection[str]) -> tp.Optional[str]:
    """The longest prefix of dotted `name` that is one of `modules` (an attribute of a module names the module)."""
    parts = name.split('.')
    for end in range(len(parts), 0, -1):
        candidate = '.'.join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_edges(modules: tp.Dict[str, Path], root: Path) -> tp.List[Edge]:
    """Every import of one module of `modules` by another, at any depth of the importing file's syntax tree.

    Returns:
        (importer, imported, 'path:line') for each import statement (and each name of a `from` import).
    """
    edges = []
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        for node in ast.walk(tree):
            targets: tp.List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # relative to the importer's package: a package's own name, a module's parent
                    package = name.split('.') if is_package else name.split('.')[:-1]
                    base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                    prefix = '.'.join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ''
                # `from pkg import mod` imports the module pkg.mod; `from mod import function` imports mod
                targets = [f'{prefix}.{alias.name}' if f'{prefix}.{alias.name}' in modules else prefix
                           for alias in node.names]
            where = f'{path.relative_to(root)}:{getattr(node, "lineno", 0)}'
            for target in targets:
                imported = _resolve(target, modules)
                if imported is not None and imported != name:
                    edges.append((name, imported, where))
    return edges


def import_cycles(edges: tp.Sequence[Edge]) -> tp.List[tp.List[str]]:
    """The groups of modules that import each other (strongly connected components of more than one module, found
    with Tarjan's algorithm), each sorted, sorted by their first module."""
    graph: tp.Dict[str, tp.Set[str]] = {}
    for importer, imported, _ in edges:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    index: tp.Dict[str, int] = {}
    low: tp.Dict[str, int] = {}
    stack: tp.List[str] = []
    on_stack: tp.Set[str] = set()
    groups = []

    def visit(node: str) -> None:  # recursion depth: at most the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def describe(groups: tp.List[tp.List[str]], edges: tp.Sequence[Edge]) -> str:
    """Each group of modules importing each other, with the import statements that join them."""
    lines = []
    for group in groups:
        lines.append('modules importing each other: ' + ', '.join(group))
        lines += list(dict.fromkeys(f'  {a} -> {b} ({where})' for a, b, where in edges if a in group and b in group))
    return '\n'.join(lines)


def test_no_module_imports_another_that_imports_it_back():
    modules = module_files(REPO, PACKAGES)
    assert 'audiocraft_mmd.train' in modules and 'grids.local' in modules  # the walk sees the package
    edges = import_edges(modules, REPO)
    # function-level imports count: the tools import their dependencies inside functions
    assert ('audiocraft_mmd.evaluate', 'audiocraft_mmd.train') in {(a, b) for a, b, _ in edges}
    groups = import_cycles(edges)
    assert not groups, describe(groups, edges)


def test_the_dataset_checker_imports_no_builder():
    """`data.check` names a bad file's fix from the build record each builder writes, not by importing them."""
    edges = import_edges(module_files(REPO, PACKAGES), REPO)
    imported = {b for a, b, _ in edges if a == 'audiocraft_mmd.data.check'}
    assert imported == {'audiocraft_mmd.data.common'}


def _write(root: Path, files: tp.Dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize('files, expected', [
    # a direct cycle through function-level imports, one of them relative
    ({'pkg/__init__.py': '', 'pkg/a.py': 'def f():\n    from .b import g\n',
      'pkg/b.py': 'def g():\n    from pkg import a\n'}, [['pkg.a', 'pkg.b']]),
    # a loop of three, through `from .. import` of a subpackage and `import x.y`
    ({'pkg/__init__.py': '', 'pkg/sub/__init__.py': '', 'pkg/sub/a.py': 'from .. import b\n',
      'pkg/b.py': 'import pkg.c as c\n', 'pkg/c.py': 'def h():\n    from .sub.a import anything\n'},
     [['pkg.b', 'pkg.c', 'pkg.sub.a']]),
    # one direction only, and a module importing a name of its own package: no cycle
    ({'pkg/__init__.py': 'from .a import f\n', 'pkg/a.py': 'import os\ndef f():\n    from .b import g\n',
      'pkg/b.py': 'X = 1\n'}, []),
])
def test_the_cycle_finder_on_known_graphs(tmp_path, files, expected):
    _write(tmp_path, files)
    modules = module_files(tmp_path, ['pkg'])
    assert import_cycles(import_edges(modules, tmp_path)) == expected
