"""The house's line and cell limits: lines of at most 100 characters in every notebook code cell and
every Python file of tests/, benchmarks/ and .ci/ (a line holding an unsplittable URL aside);
exported cells of at most 25 lines unless the cell says why it is longer (a comment
`# long: REASON` among its first lines), and at most 10 such cells; and import cells holding only
imports, as nbdev's documentation build runs every cell with an import. Prints what breaks them."""
import ast, json, re, sys
from pathlib import Path

MAX_LINE, MAX_CELL, MAX_LONG = 100, 25, 10
SCRIPTS = ('tests/**/*.py', 'benchmarks/*.py', '.ci/*.py')  # hand-written Python outside nbs/

def code_cells(nb:Path):
    "(cell id, is it exported, its lines) of every code cell of `nb`."
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code':
            yield c.get('id', '?'), bool(re.match(r'#\|\s*export', src)), src.splitlines()

def too_long(line:str) -> bool:
    return len(line) > MAX_LINE and not re.search(r'https?://\S{40,}', line)

def mixes_imports(lines:list) -> bool:
    ("nbdev's rule: a cell (not exported, not `eval: false`) with an import and an expression or "
     "assignment, which the documentation build would run whole.")
    src = '\n'.join(l for l in lines if not l.lstrip().startswith(('%', '!')))
    if re.search(r'#\|\s*(export|eval:\s*false)', src, re.I) or 'nbdev_export()' in src:
        return False
    try: tree = ast.parse(src)
    except SyntaxError: return False
    has = lambda *types: any(isinstance(n, types) for n in ast.walk(tree))
    return has(ast.Import, ast.ImportFrom) and has(ast.Expr, ast.Assign)

def _cell_row(nb:Path, cid:str, lines:list, why:str|None) -> str:
    reason = f" ({why.split('# long:')[1].strip()})" if why else ''
    return f'{nb.name} cell {cid}: {len(lines)} lines{reason}'

def main(root='.') -> int:
    root, long_lines, long_cells, excused, mixed = Path(root), [], [], [], []
    for nb in sorted((root/'nbs').glob('*.ipynb')):
        for cid, exported, lines in code_cells(nb):
            if mixes_imports(lines): mixed.append(f'{nb.name} cell {cid}')
            long_lines += [f'{nb.name} cell {cid} line {i}: {len(l)}'
                           for i, l in enumerate(lines, 1) if too_long(l)]
            if exported and len(lines) > MAX_CELL:
                why = next((l for l in lines[:4] if '# long:' in l), None)
                (excused if why else long_cells).append(_cell_row(nb, cid, lines, why))
    for p in sorted(q for pattern in SCRIPTS for q in root.glob(pattern)):
        long_lines += [f'{p.relative_to(root)} line {i}: {len(l)}'
                       for i, l in enumerate(p.read_text().splitlines(), 1) if too_long(l)]
    for title, rows in (('lines over 100 characters', long_lines),
                        ('cells over 25 lines without a reason', long_cells),
                        ('longer cells with a reason', excused),
                        ('cells mixing imports with other code', mixed)):
        print(f'{len(rows)} {title}'); print(''.join(f'  {r}\n' for r in rows), end='')
    bad = bool(long_lines or long_cells or mixed or len(excused) > MAX_LONG)
    if len(excused) > MAX_LONG: print(f'more than {MAX_LONG} longer cells')
    return int(bad)

if __name__ == '__main__': sys.exit(main(*sys.argv[1:]))
