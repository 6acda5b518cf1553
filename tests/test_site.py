"""The documentation site in a real browser: `make docs` output (built here when older than
the notebooks) served on 127.0.0.1 and opened in Debian's headless Chromium (selenium and
chromium-driver). Every page loads with no console error and no request outside 127.0.0.1,
links resolve, math is typeset, figures load, search works. Screenshots go to
$SEARLE_ARTEFACTS (default _docs/screenshots). Skips when selenium or the browser is missing."""
import functools, http.server, importlib.util, json, os, re, shutil, subprocess, sys, threading
import urllib.parse, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT/'_docs'

def _page(nb:Path) -> str:
    "The page nbdev names for a notebook (`05_oti.ipynb` -> `oti.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb.name)).name

def _notebooks() -> list:
    return sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))

def _fresh() -> bool:
    "A site newer than every notebook, every file of docs/ and settings.ini."
    idx = DOCS/'index.html'
    inputs = _notebooks() + [p for p in (ROOT/'docs').rglob('*') if p.is_file()]
    inputs.append(ROOT/'settings.ini')
    return idx.exists() and idx.stat().st_mtime > max(p.stat().st_mtime for p in inputs)

def _browser() -> tuple:
    if importlib.util.find_spec('selenium') is None:
        pytest.skip('selenium is not installed (pip install -e ".[dev]")')
    names = ('chromium', 'chromium-browser', 'google-chrome')
    chromium = next(filter(None, map(shutil.which, names)), None)
    driver = shutil.which('chromedriver')
    if not chromium or not driver:
        pytest.skip('no chromium and chromedriver (apt-get install chromium chromium-driver)')
    return chromium, driver

class _Handler(http.server.SimpleHTTPRequestHandler):
    seen = []  # (path, status) of every request the server answered
    def log_request(self, code='-', size='-'): self.seen.append((self.path, int(code)))
    def log_message(self, *a): pass

@pytest.fixture(scope='module')
def built() -> Path:
    "_docs, built by docs/build.py unless a build newer than its inputs is there (`make docs`)."
    if not _fresh():
        r = subprocess.run([sys.executable, str(ROOT/'docs'/'build.py')], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, f'docs/build.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return DOCS

@pytest.fixture(scope='module')
def site(built):
    chromium, driver = _browser()
    handler = functools.partial(_Handler, directory=str(DOCS))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    o = Options(); o.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1400,1000', '--disable-background-networking', '--no-first-run',
              '--disable-component-update'):
        o.add_argument(a)
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL', 'performance': 'ALL'})
    d = webdriver.Chrome(service=Service(driver), options=o)
    d.set_page_load_timeout(60); d.set_script_timeout(60)
    art = Path(os.environ.get('SEARLE_ARTEFACTS') or DOCS/'screenshots')
    art.mkdir(parents=True, exist_ok=True)
    try: yield d, f'http://127.0.0.1:{srv.server_address[1]}/', art
    finally: d.quit(); srv.shutdown()

_MATHJAX_DONE = """const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.Hub) MathJax.Hub.Register.StartupHook('End', () => done(1));
else done(0);"""

def _open(d, url:str) -> tuple:
    "Load `url` and wait for its MathJax; return the console errors and the requests outside."
    d.get_log('browser'); d.get_log('performance')  # forget the previous page's
    d.get(url)
    d.execute_async_script(_MATHJAX_DONE)
    errors = [e['message'] for e in d.get_log('browser') if e['level'] == 'SEVERE']
    msgs = [json.loads(e['message'])['message'] for e in d.get_log('performance')]
    urls = [m['params']['request']['url'] for m in msgs
            if m['method'] == 'Network.requestWillBeSent']
    local = ('data', 'blob', 'about', 'chrome')
    outside = [u for u in urls if urllib.parse.urlsplit(u).scheme not in local
               and urllib.parse.urlsplit(u).hostname != '127.0.0.1']
    return errors, outside

def _js(d, expr:str): return d.execute_script('return ' + expr)

def test_every_notebook_is_a_page_with_its_title(built):
    missing = [nb.name for nb in _notebooks() if not (DOCS/_page(nb)).exists()]
    assert not missing, f'notebooks with no page in {DOCS}: {missing}'
    for nb in _notebooks():
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        title = next(l[2:].strip() for c in cells if c['cell_type'] == 'markdown'
                     for l in ''.join(c['source']).splitlines() if l.startswith('# '))
        html = (DOCS/_page(nb)).read_text(encoding='utf-8')
        head = re.search(r'<title>(.*?)</title>', html, re.S)[1]
        assert title.replace('&', '&amp;') in head, \
            f'{_page(nb)}: <title> {head!r}; expected {title!r}'

def test_pages(site):
    d, base, art = site
    pages = sorted(p.name for p in DOCS.glob('*.html'))
    links, bad = set(), []
    for name in pages:
        errors, outside = _open(d, base + name)
        if errors: bad.append(f'{name}: console errors {errors[:3]}')
        if outside: bad.append(f'{name}: requests outside 127.0.0.1 {outside[:3]}')
        broken = _js(d, "Array.from(document.images)"
                        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        if broken: bad.append(f'{name}: images that did not load {broken[:3]}')
        hrefs = _js(d, "Array.from(document.querySelectorAll('a[href]'), a => a.href)")
        links |= {(name, h) for h in hrefs if h.startswith(base)}
    assert not bad, '\n'.join(bad)
    html = {}
    for src, href in sorted(links):  # every internal link: its page answers and its anchor exists
        u = urllib.parse.urlsplit(href)
        path = u.path.lstrip('/') or 'index.html'
        if path not in html:
            try: html[path] = urllib.request.urlopen(base + path, timeout=10).read().decode('utf-8')
            except OSError as e: bad.append(f'{src} links to {href}: {e}'); html[path] = None
        frag = urllib.parse.unquote(u.fragment)
        if frag and html[path] and path.endswith('.html') and f'id="{frag}"' not in html[path]:
            bad.append(f'{src} links to {href}: no id {frag!r} on {path}')
    assert not bad, '\n'.join(sorted(set(bad))[:20])
    failed = [(p, c) for p, c in _Handler.seen if c >= 400]
    assert not failed, f'the server answered {failed[:10]}'
    print(f'{len(pages)} pages, {len(links)} internal links checked')

def test_oti_math_and_tour_figures(site):
    d, base, art = site
    _open(d, base + 'oti.html')
    n = _js(d, "document.querySelectorAll('.MathJax, .MathJax_Display').length")
    raw = _js(d, "Array.from(document.querySelectorAll('.math.notranslate'))"
                 ".filter(e => !e.querySelector('.MathJax, .MathJax_Display')).length")
    assert n > 0 and raw == 0, f'oti.html: {n} typeset formulas, {raw} left as TeX'
    d.save_screenshot(str(art/'oti.png'))
    _open(d, base + 'tour.html')
    figs = _js(d, "Array.from(document.querySelectorAll('.bd-article img'),"
                  " i => [i.src, i.naturalWidth])")
    assert len(figs) >= 3 and all(w > 0 for _, w in figs), f'tour.html (src, naturalWidth): {figs}'
    d.execute_script("document.querySelector('.bd-article img').scrollIntoView({block: 'center'})")
    d.save_screenshot(str(art/'tour.png'))
    print(f'{n} typeset formulas on oti.html; {len(figs)} figures on tour.html; shots in {art}')

def test_search_and_literal_dollar(site):
    d, base, art = site
    from selenium.webdriver.support.ui import WebDriverWait
    _open(d, base + 'search.html?q=invert_batch')
    WebDriverWait(d, 30).until(lambda d: d.find_elements('css selector', '#search-results li'))
    hits = _js(d, "Array.from(document.querySelectorAll('#search-results li a'), a => a.href)")
    assert any('oti.html' in h for h in hits), f'search for invert_batch found {hits}'
    d.save_screenshot(str(art/'search.png'))
    _open(d, base + 'index.html')
    prose = _js(d, "Array.from(document.querySelectorAll('article p'), p => p.textContent)"
                   ".filter(t => t.includes('a photo of $ that'))")
    assert prose, 'index.html: no paragraph shows "a photo of $ that" with a literal dollar'
    math = _js(d, "Array.from(document.querySelectorAll('.math.notranslate'), m => m.textContent)")
    assert not [m for m in math if 'that' in m], f'index.html: prose read as math: {math}'
