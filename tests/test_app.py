"""The web app in a real browser: `searle-app` on a small offline world, driven by headless Chromium
(selenium + Debian's chromium-driver). Skips when gradio, selenium or the browser is missing."""
import importlib.util, json, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import clip_with_networks
from searle import world

K = 4

def _command(name:str) -> list:
    ("The console script, or the same command through Python when this checkout's scripts are not "
     "installed.")
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-c',
                              f"from searle.cli import {name.replace('-', '_')} as f; f()"]

def _browser() -> tuple[str, str]:
    for mod in ('gradio', 'selenium'):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f'{mod} is not installed (pip install -e ".[app]" selenium)')
    chromium = next(filter(None,
                           map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))),
                    None)
    driver = shutil.which('chromedriver')
    if not chromium or not driver:
        pytest.skip('no chromium and chromedriver (apt-get install chromium chromium-driver)')
    return chromium, driver

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _wait_until_up(url:str, proc, timeout:float=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f'searle-app exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(1)
    pytest.fail(f'searle-app did not answer on {url} within {timeout} s')

def _driver(chromium, driver):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    o = Options(); o.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1400,1100'):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=o)

def _clip_files(family:str, d:Path) -> list:
    ("`searle-app` options for a tiny CLIP of `family` saved to a file, with phi, LinCIR's phi and "
     "Pic2Word's network for it (none: the world).")
    if family == 'world': return []
    clip_file, nets = clip_with_networks(f'{family}:tiny', d)
    return ['--clip-model', clip_file, *[a for n, f in nets.items() for a in (f'--{n}', f)]]

def _query(d, wait, url:str, ref:Path, caption:str, method:str|None=None) -> list[list[str]]:
    "A query typed in a fresh page (`method` chosen, or the page's default): its table rows."
    from selenium.webdriver.common.by import By
    d.get(url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#reference input[type=file]'))
    # upload the reference
    d.find_element(By.CSS_SELECTOR, '#reference input[type=file]').send_keys(str(ref))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#reference img'))
    box = d.find_element(By.CSS_SELECTOR, '#caption textarea')
    box.clear(); box.send_keys(caption)
    if method is not None:
        [label] = [l for l in d.find_elements(By.CSS_SELECTOR, '#method label')
                   if l.text.strip() == method]
        label.click()
    d.find_element(By.CSS_SELECTOR, '#search').click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#table table tbody tr')) == K)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#results img')) >= K)
    return [[td.text for td in tr.find_elements(By.TAG_NAME, 'td')]
            for tr in d.find_elements(By.CSS_SELECTOR, '#table table tbody tr')]

def _ranked(rows:list, gallery:Path, ref:Path, what:str) -> list[str]:
    "The names of a results table, checked: ranks 1..K, gallery files, no reference, best first."
    assert [int(r[0]) for r in rows] == list(range(1, K + 1)), (what, rows)
    names, scores = [r[1] for r in rows], [float(r[2]) for r in rows]
    # gallery files, the reference left out
    assert all((gallery/n).is_file() for n in names) and ref.name not in names, (what, rows)
    assert scores == sorted(scores, reverse=True), (what, rows)
    return names

@pytest.mark.parametrize('family', ['world', 'hf'])
def test_one_query_in_headless_chromium(tmp_path, family):
    ("A query typed in the browser: on the world's CLIP (rank 1 is a ground truth) and on a "
     "Hugging Face CLIP file.")
    chromium, driver = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    root = world.build_world(tmp_path/'world', seed=5, n_gallery=100, n_queries=4, n_test=0,
                             n_unlabeled=0, progress=False)
    gallery = root/'COCO2017_unlabeled'/'unlabeled2017'
    q = json.loads((root/'annotations'/'val.json').read_text())[1]  # a colour change: 'is <colour>'
    ref = gallery/f"{q['reference_img_id']:012d}.png"
    attrs = json.loads((root/'world.json').read_text())['images']
    home, cwd, tmp, cache = (tmp_path/d for d in ('home', 'cwd', 'tmp', 'cache'))
    for d in (home, cwd, tmp): d.mkdir()
    port, clip_args = _free_port(), _clip_files(family, tmp_path)
    env = {**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
           'OMP_NUM_THREADS': '1', 'HOME': str(home), 'TMPDIR': str(tmp),
           'MPLCONFIGDIR': str(cache/'mpl')}
    proc = subprocess.Popen(_command('searle-app')
                            + ['--gallery', str(gallery), '--port', str(port), '--k', str(K),
                               '--cache-dir', str(cache), '--device', 'cpu', *clip_args],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    d = None
    try:
        _wait_until_up(f'http://127.0.0.1:{port}/', proc)
        d = _driver(chromium, driver)
        wait, url = WebDriverWait(d, 180), f'http://127.0.0.1:{port}/'
        rows = _query(d, wait, url, ref, q['relative_caption'])
        # the page's default: SEARLE's phi, whatever other networks it was given
        chosen = d.find_element(By.CSS_SELECTOR, '#method input:checked').get_attribute('value')
        d.save_screenshot(str(tmp_path/'app.png'))
        print('screenshot:', tmp_path/'app.png')
        words = d.find_element(By.CSS_SELECTOR, '#words').text
        # SEARLE's neighbours, chosen on the page (their networks given on the command line)
        others = {m: _query(d, wait, url, ref, q['relative_caption'], m)
                  for m in (('lincir', 'pic2word') if family != 'world' else ())}
        # an upload that is not an image gets a clear message
        (tmp_path/'notes.png').write_text('not an image')
        d.get(f'http://127.0.0.1:{port}/')
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#reference input[type=file]'))
        d.find_element(By.CSS_SELECTOR,
                       '#reference input[type=file]').send_keys(str(tmp_path/'notes.png'))
        d.find_element(By.CSS_SELECTOR, '#search').click()
        wait.until(lambda d: 'notes.png is not an image' in d.find_element(By.TAG_NAME,
                                                                           'body').text)
    finally:
        if d is not None: d.quit()
        proc.terminate()
        try: log = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired: proc.kill(); log = proc.communicate()[1]
    names = _ranked(rows, gallery, ref, 'phi')
    assert chosen == 'phi', chosen
    for m, r in others.items(): _ranked(r, gallery, ref, m)
    # the world's CLIP and phi are trained: rank 1 has the target's attributes
    if family == 'world':
        top, want = attrs[str(int(Path(names[0]).stem))], attrs[str(q['target_img_id'])]
        assert {k: top[k] for k in world.ASPECTS} == {k: want[k] for k in world.ASPECTS}, (q, top,
                                                                                           want)
    assert '$ ≈' in words  # phi's pseudo word and its nearest words
    size = (tmp_path/'app.png').stat().st_size
    assert size > 10_000, f'the screenshot has {size} bytes (<= 10,000): a blank page?'
    for d in (home, cwd, tmp):
        assert not any(d.iterdir()), ('the app wrote outside its cache folder: '
                                      f'{sorted(d.rglob("*"))[:5]}')
    # each upload is removed after its query, the refused one too; a refused query is one log line
    left = [p for p in (cache/'gradio').rglob('*') if p.name in (ref.name, 'notes.png')]
    assert not left, f'uploads left in the cache: {left}'
    refused = [l for l in log.splitlines() if 'notes.png is not an image' in l]
    assert 'Traceback' not in log, log[-3000:]
    assert len(refused) == 1 and 'refused a query' in refused[0], log[-3000:]
