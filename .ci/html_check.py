"""Convert every notebook to HTML (the part of the docs build that works without Quarto) and check that the page
holds what the notebook holds: its title and every code cell."""
from pathlib import Path
import html, re, sys, nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
nbs = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
for p in nbs:
    nb = nbformat.read(p, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    code = sum(c.cell_type == 'code' for c in nb.cells)
    cells = len(re.findall(r'class="jp-Cell jp-CodeCell', body))
    if cells != code: sys.exit(f'{p}: the HTML has {cells} code cells; the notebook has {code}')
    title = next((l[2:].strip() for c in nb.cells if c.cell_type == 'markdown' for l in c.source.splitlines() if l.startswith('# ')), None)
    if title and html.escape(title, quote=False) not in body: sys.exit(f'{p}: the title {title!r} is missing from the HTML')
print(f'{len(nbs)} notebooks convert to HTML with their titles and all their code cells')
