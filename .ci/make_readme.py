"""Write README.md from nbs/index.ipynb without Quarto: drop `#| hide` cells and nbdev directives,
keep the outputs, convert to Markdown with nbconvert. `--check` fails when README.md is out of
date."""
import sys, copy, re
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]

def render() -> str:
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        directives = [l.strip() for l in lines if l.startswith('#|')]
        hidden = any(d.replace(' ', '') in ('#|hide', '#|exporti', '#|export') for d in directives)
        if c.cell_type == 'code' and hidden: continue
        c = copy.deepcopy(c)
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
        else:  # a link to a notebook is relative to nbs/
            c.source = re.sub(r'\]\((?![a-z]+:|/|#)([^)\s]+\.ipynb)', r'](nbs/\1', c.source)
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    head = '<!-- generated from nbs/index.ipynb by `make readme`; do not edit -->\n\n'
    return head + body.strip() + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.is_file() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of sync with nbs/index.ipynb: run `make readme` and commit')
        print('README.md is in sync with nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print('wrote', readme)
