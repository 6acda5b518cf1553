"""The house's line and cell limits on what the notebooks export: lines of at most 100 characters (a line
holding an unsplittable URL aside), exported cells of at most 25 lines unless the cell says why it is longer
(a comment `# long: REASON` among its first lines), and at most 10 such cells. Prints what breaks them."""
import json, re, sys
from pathlib import Path

MAX_LINE, MAX_CELL, MAX_LONG = 100, 25, 10

def exported(nb:Path):
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code' and re.match(r'#\|\s*export', src): yield c.get('id', '?'), src.splitlines()

def main(folder='nbs') -> int:
    long_lines, long_cells, excused = [], [], []
    for nb in sorted(Path(folder).glob('[0-9]*.ipynb')):
        for cid, lines in exported(nb):
            for i, l in enumerate(lines, 1):
                if len(l) > MAX_LINE and not re.search(r'https?://\S{40,}', l): long_lines.append(f'{nb.name} cell {cid} line {i}: {len(l)}')
            if len(lines) > MAX_CELL:
                why = next((l for l in lines[:4] if '# long:' in l), None)
                (excused if why else long_cells).append(f'{nb.name} cell {cid}: {len(lines)} lines' + (f' ({why.split("# long:")[1].strip()})' if why else ''))
    for title, rows in (('lines over 100 characters', long_lines), ('cells over 25 lines without a reason', long_cells),
                        ('longer cells with a reason', excused)):
        print(f'{len(rows)} {title}'); print(''.join(f'  {r}\n' for r in rows), end='')
    bad = bool(long_lines or long_cells or len(excused) > MAX_LONG)
    if len(excused) > MAX_LONG: print(f'more than {MAX_LONG} longer cells')
    return int(bad)

if __name__ == '__main__': sys.exit(main(*sys.argv[1:]))
