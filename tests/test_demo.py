"""The main job: `searle-demo --quick` (the CI preset) runs every stage on the offline world and
reaches the goals of the offline-world issue: SEARLE-OTI R@1 >= image+text R@1 + 20, SEARLE (phi)
R@1 >= image+text R@1 + 15, image-only and text-only mAP@5 <= 10; LinCIR and Pic2Word, trained on
the world too, are scored beside them."""
import json, os, subprocess
import pytest

METHODS = ('image-only', 'text-only', 'image+text', 'oti', 'phi', 'lincir', 'pic2word')
METRICS = ('recall@1', 'recall@5', 'recall@10', 'map@5', 'map@10', 'map@25', 'map@50')

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    r = subprocess.run(['searle-demo', '--out', str(out), '--quick', '--no-progress'],
                       capture_output=True, text=True, timeout=1800,
                       env={**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1',
                            'TRANSFORMERS_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    # plain log lines
    assert 'Loading weights' not in r.stderr and '\r' not in r.stderr, r.stderr[-2000:]
    return out, r.stdout

def test_demo_writes_its_contract(demo):
    out, stdout = demo
    m = json.loads((out/'metrics.json').read_text())
    assert tuple(m) == METHODS and all(tuple(m[k]) == METRICS for k in METHODS)
    assert all(0 <= v <= 100 for k in METHODS for v in m[k].values()), m
    cfg = json.loads((out/'config.json').read_text())
    assert {'demo', 'oti', 'phi', 'lincir', 'pic2word', 'seconds'} <= set(cfg), set(cfg)
    for f in ('results.csv', 'methods.png', 'queries.png'):
        assert (out/f).stat().st_size > 0, f'{f} is empty'
    for label in ('SEARLE-OTI', 'SEARLE (phi)', 'LinCIR', 'Pic2Word', 'map@5'):
        assert label in stdout, stdout
    assert ('config.json' in stdout.splitlines()[-1]
            and 'kept for a rerun' in stdout.splitlines()[-1])

def test_demo_reaches_the_goals(demo):
    m = json.loads((demo[0]/'metrics.json').read_text())
    it = m['image+text']['recall@1']
    assert m['oti']['recall@1'] >= it + 20, m
    assert m['phi']['recall@1'] >= it + 15, m
    assert m['image-only']['map@5'] <= 10 and m['text-only']['map@5'] <= 10, m

def test_the_neighbours_compose_too(demo):
    ("Pic2Word (trained on the world's images alone) and LinCIR (on its captions alone) beat the "
     "baselines.")
    m = json.loads((demo[0]/'metrics.json').read_text())
    assert m['pic2word']['recall@1'] >= m['image+text']['recall@1'] + 10, m
    assert m['lincir']['map@5'] >= max(m['image-only']['map@5'], m['text-only']['map@5']) + 30, m

def test_demo_refuses_a_folder_of_another_demo(demo):
    ("A rerun resumes every stage from the folder, so another config (here the full preset) must "
     "not mix with it.")
    r = subprocess.run(['searle-demo', '--out', str(demo[0]), '--no-progress'], capture_output=True,
                       text=True, timeout=600,
                       env={**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1',
                            'TRANSFORMERS_OFFLINE': '1'})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert last.startswith('searle-demo: error: `n_gallery`: this folder was made with 500, now '
                           '1000; use another `--out`'), last
