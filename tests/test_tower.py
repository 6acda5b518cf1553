"""The tower: each module imports only the modules of notebooks before its own (in nbs/ order), at
the top of its file or inside a function alike: a notebook runs and tests without the later ones."""
import ast, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def floors() -> list[str]:
    "The modules in the order of their notebooks (00_core, 01_runs, ..., 06_phi, 06a_lincir, ...)."
    out = []
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        first = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
        if first.startswith('#| default_exp'): out.append(first.split()[-1])
    return out

def imported(path:Path) -> list[tuple[int, str]]:
    "(line, searle module) of every import of a searle module in `path`, wherever it is."
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split('.')[1]) for a in node.names
                      if a.name.startswith('searle.')]
        elif isinstance(node, ast.ImportFrom):
            mod, own = node.module or '', node.level == 1
            if (own and not mod) or mod == 'searle':  # from . import x, from searle import x
                found += [(node.lineno, a.name) for a in node.names]
            elif own or mod.startswith('searle.'):  # from .x import y, from searle.x import y
                found.append((node.lineno, mod.split('.')[0 if own else 1]))
    return found

def test_no_module_imports_a_later_one():
    order = floors()
    assert order[:3] == ['core', 'runs', 'clip'] and 'phi' in order and 'cli' in order, order
    later = [f'searle/{m}.py line {n} imports searle.{x}'
             for i, m in enumerate(order) for n, x in imported(ROOT/'searle'/f'{m}.py')
             if x in order and order.index(x) >= i]
    assert not later, later
