"""Convert every notebook to HTML (the part of the docs build that works without Quarto)."""
from pathlib import Path
import sys, nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
nbs = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
for p in nbs:
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(p, as_version=4))
    if '<html' not in body: sys.exit(f'{p}: nbconvert produced no HTML')
print(f'{len(nbs)} notebooks convert to HTML')
