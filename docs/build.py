"""Build the documentation site offline: nbdev's own processing of the notebooks (every exported
name gets its `show_doc` block), then Sphinx with myst-nb and sphinx-book-theme writing static
HTML to _docs/. Neither Quarto nor the network is needed: `make docs` (python docs/build.py)."""
import importlib.util, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT/'_proc'/'_sphinx'        # the pages as Sphinx reads them (Quarto skips folders named _*)
MATHJAX = ROOT/'_proc'/'_mathjax'   # MathJax 2 from jupyter-server-mathjax, served from _static
OUT = ROOT/'_docs'
TOOLS = ('nbdev', 'sphinx', 'myst_nb', 'sphinx_book_theme', 'jupyter_server_mathjax')

def notebooks(nbs:Path) -> list:
    "The site's pages in reading order: index, then every notebook sorted by file name."
    found = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    return sorted(found, key=lambda p: (p.name != 'index.ipynb', p.name))

def process(nbs:Path, n_workers:int) -> Path:
    "nbdev's processors (front matter, show_doc blocks, links, hidden cells) on every notebook."
    from nbdev.serve import proc_nbs  # what nbdev_proc_nbs runs, without its Quarto install
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    # nbdev's workers import this checkout's package, whatever else is installed
    path = [str(ROOT), os.environ.get('PYTHONPATH')]
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, path))
    sys.path.insert(0, str(ROOT))  # forked workers inherit this process's path, not PYTHONPATH
    return proc_nbs(nbs, n_workers=n_workers)

def text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')

_re_dir = re.compile(r'^#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def split_directives(src:str) -> tuple:
    "The cell's leading `#| key: value` options (as Quarto reads them) and the code after them."
    lines, opts = src.splitlines(), {}
    while lines and _re_dir.match(lines[0]):
        k, v = _re_dir.match(lines.pop(0)).groups()
        opts[k] = v.strip('\'"').lower()
    return opts, '\n'.join(lines).strip('\n')

_re_src = re.compile(r'^\[source\]\(([^)\s]+)\)\{[^}\n]*\}\s*$', re.M)
_re_head = re.compile(r'^(#{2,6})\s+(\S.*?)\s*$', re.M)

class Links:
    "Links for the local site: the docs host's pages and links to notebooks become page links."
    def __init__(self, host:str, pages:dict, anchors:dict):
        self.host, self.pages, self.anchors = host.rstrip('/') + '/', pages, anchors
        names = '|'.join(re.escape(n) for n in pages)
        self.re_nb = re.compile(rf'\]\((?:\./)?(?:nbs/)?({names})(#[^)\s]*)?\)')
        host = re.escape(self.host)
        self.re_api = re.compile(rf'\[(`[^`\]]+`)\]\({host}([\w-]+\.html)#([^)\s]+)\)')

    def __call__(self, s:str) -> str:
        # a name nbdev links that has no show_doc block (a private helper, a method): plain code
        s = self.re_api.sub(lambda m: m[0] if m[3] in self.anchors.get(m[2], ()) else m[1], s)
        s = s.replace(self.host, '')
        s = self.re_nb.sub(lambda m: '](' + self.pages[m[1]] + (m[2] or '') + ')', s)
        # a remote image (a badge) would be a request outside the site: its alt text stays
        return re.sub(r'!\[([^\]]*)\]\((https?://[^)\s]+)\)', r'\1', s)

def api_block(md:str) -> str:
    "A show_doc block as page Markdown: its heading joins the page's contents, with nbdev's anchor."
    md = re.sub(r'^---\s*\n', '', md.lstrip())
    m, h = _re_src.search(md), _re_head.search(md)
    src = (f'<a class="nbdev-source" href="{m[1]}" target="_blank" rel="noopener">source</a>'
           if m else '')
    anchor = f'<a class="nbdev-anchor" id="{h[2].lower()}"></a>' if h else ''
    return f'<div class="nbdev-doc">{anchor}{src}</div>\n\n' + _re_src.sub('', md).strip() + '\n'

def cell(kind:str, src:str, outputs=(), tags=()) -> dict:
    c = dict(cell_type=kind, metadata={'tags': list(tags)} if tags else {}, source=src)
    if kind == 'code': c.update(execution_count=None, outputs=list(outputs))
    return c

def front(cells:list) -> dict:
    "The front matter nbdev made from the first markdown cell (title, description, output-file)."
    import yaml
    for c in cells:
        m = re.match(r'^---\s*\n(.*?)\n---', text(c.get('source')).strip() + '\n', re.S)
        if c['cell_type'] == 'raw' and m: return yaml.safe_load(m[1]) or {}
    return {}

def code_cells(c:dict, links:Links) -> list:
    "A processed code cell as myst-nb cells: Quarto's cell options become myst-nb's tags."
    opts, code = split_directives(text(c.get('source')))
    if opts.get('include') == 'false': return []
    outputs = c.get('outputs', [])
    for o in outputs:
        if 'text/markdown' in o.get('data', {}):
            o['data']['text/markdown'] = links(text(o['data']['text/markdown']))
    if opts.get('output') == 'asis':  # Markdown written into the page, as Quarto does (show_doc)
        md = '\n'.join(text(o['data']['text/markdown']) for o in outputs
                       if 'text/markdown' in o.get('data', {}))
        res = [cell('code', code)] if opts.get('echo') != 'false' else []
        if md.strip(): res.append(cell('markdown', api_block(md) if 'show_doc' in code else md))
        return res
    tags = {'remove-input'} if opts.get('echo') == 'false' or not code else set()
    if opts.get('output') == 'false': tags.add('remove-output')
    if 'remove-input' in tags and not outputs: return []
    return [cell('code', code, outputs, sorted(tags))]

def to_page(nb:dict, fm:dict, links:Links) -> dict:
    "A processed notebook as the page myst-nb reads: title and description first."
    out = [cell('markdown', f"# {fm.get('title', 'Untitled')}\n\n{{.nbdev-description}}\n"
                            f"{links(fm.get('description', ''))}\n")]
    for c in nb['cells']:
        src = text(c.get('source'))
        if c['cell_type'] == 'raw' or not src.strip(): continue
        if c['cell_type'] == 'code': out += code_cells(c, links)
        elif not src.lstrip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'):
            out.append(cell('markdown', links(src)))
    for i, c in enumerate(out): c['id'] = f'c{i}'
    kernel = {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}
    meta = dict(kernelspec=nb['metadata'].get('kernelspec', kernel),
                language_info={'name': 'python', 'pygments_lexer': 'ipython3'})
    return dict(cells=out, metadata=meta, nbformat=4, nbformat_minor=5)

def toctree(names:list) -> dict:
    "The site's navigation: every page after index, in the order of the notebooks' file names."
    src = '```{toctree}\n:hidden:\n:maxdepth: 1\n\n' + '\n'.join(names) + '\n```\n'
    return dict(cell('markdown', src), id='toctree')

def write_if_changed(p:Path, s:str):
    if not p.exists() or p.read_text(encoding='utf-8') != s: p.write_text(s, encoding='utf-8')

def sources(nbs:Path, cache:Path, host:str) -> list:
    "Write the Sphinx sources: one page per notebook, named as nbdev names its HTML page."
    nbs_list = notebooks(nbs)
    if not nbs_list or nbs_list[0].name != 'index.ipynb':
        sys.exit(f'docs/build.py: {nbs}/index.ipynb is missing; expected the home page there')
    procs = {p.name: json.loads((cache/p.name).read_text(encoding='utf-8')) for p in nbs_list}
    fms = {n: front(nb['cells']) for n, nb in procs.items()}
    pages = {n: fm.get('output-file', Path(n).stem + '.html') for n, fm in fms.items()}
    stems = [Path(pages[n]).stem for n in procs]
    if len(set(stems)) != len(stems):
        sys.exit(f'docs/build.py: two notebooks give one page name; expected distinct: {stems}')
    anchors = {pages[n]: {h[2].lower() for c in nb['cells'] if 'show_doc' in text(c.get('source'))
                          for o in c.get('outputs', [])
                          for h in _re_head.finditer(text(o.get('data', {}).get('text/markdown')))}
               for n, nb in procs.items()}
    links = Links(host, pages, anchors)
    SRC.mkdir(parents=True, exist_ok=True)
    for old in SRC.glob('*.ipynb'):
        if old.stem not in stems: old.unlink()
    for (name, nb), stem in zip(procs.items(), stems):
        page = to_page(nb, fms[name], links)
        if name == 'index.ipynb': page['cells'].append(toctree(stems[1:]))
        page = json.dumps(page, indent=1, ensure_ascii=False)
        write_if_changed(SRC/f'{stem}.ipynb', page)
    return stems

def mathjax():
    "MathJax 2 and its STIX web fonts, from the jupyter-server-mathjax package (_static/mathjax)."
    import jupyter_server_mathjax
    src, dst = Path(jupyter_server_mathjax.__file__).parent/'static', MATHJAX/'mathjax'
    if not (dst/'MathJax.js').exists(): shutil.copytree(src, dst, dirs_exist_ok=True)

def main():
    t0 = time.time()
    missing = [m for m in TOOLS if importlib.util.find_spec(m) is None]
    if missing: sys.exit(f"docs/build.py: {', '.join(missing)} not installed; expected the "
                         'dev_requirements of settings.ini (pip install -e ".[dev]")')
    os.chdir(ROOT)
    for stale in (ROOT/'_proc', OUT): shutil.rmtree(stale, ignore_errors=True)  # renamed notebooks
    from nbdev.config import get_config
    cfg = get_config()
    cache = process(cfg.nbs_path, n_workers=int(os.environ.get('SEARLE_DOCS_WORKERS', 2)))
    t1 = time.time()
    stems = sources(cfg.nbs_path, cache, cfg.doc_host + cfg.doc_baseurl)
    mathjax()
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-c', str(ROOT/'docs'), SRC, OUT]
    r = subprocess.run([str(a) for a in cmd])
    if r.returncode: sys.exit(f'docs/build.py: sphinx exited with {r.returncode} on {SRC} -> {OUT}')
    print(f'{len(stems)} pages in {OUT} ({t1 - t0:.0f} s nbdev, {time.time() - t1:.0f} s sphinx)')

if __name__ == '__main__': main()
