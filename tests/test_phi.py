"""phi: the loss of one pair against the formula and the loss against the original, released
checkpoints, kill -9 and resume, two processes = one. (06_phi tests the loss on larger batches and
that training works.)"""
import logging, os, signal, subprocess, sys, textwrap, time, urllib.error, urllib.request
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from searle.clip import build_clip
from searle.core import load_json, load_tensors
from searle.phi import (Phi, PhiConfig, contrastive_loss, load_phi, save_phi, train_phi,
                        PHI_RELEASE_URL)

PHRASES = {'dog': ['a photo of dog that runs on the beach',
                   'a photo of dog that chases another dog'],
           'cat': ['a photo of cat that purrs', 'a photo of cat on a red sofa'],
           'tree': ['a photo of tree that is tall and green'],
           'bird': ['a photo of a parrot that flies']}  # problematic: never drawn

@pytest.fixture(autouse=True)
def one_thread():
    "Two torch threads on two busy cores run these tiny models ten times slower than one."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def world(n=64, seed=0, dim=64):
    "n images: random features, tokens, and a concept table over PHRASES."
    g = torch.Generator().manual_seed(seed)
    names = [f'img{i:03d}.jpg' for i in range(n)]
    concepts = ['bird', 'dog', 'cat', 'tree']
    table = {nm: [concepts[(i + j) % 4] for j in range(4)] for i, nm in enumerate(names)}
    return names, torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g), table

def max_diff(a, b):
    return max((x - y).abs().max().item() for x,
               y in zip(a.state_dict().values(), b.state_dict().values()))

# ---- the loss

def direct_formula(t, p, tau):
    "SPEC's formula, literally: float64, one row at a time."
    t, p = F.normalize(t.double(), dim=-1), F.normalize(p.double(), dim=-1)
    z, B = torch.cat([t, p]), len(t)
    rows = []
    for a in range(2 * B):
        den = sum(torch.exp(z[a] @ z[b] / tau) for b in range(2 * B) if b != a)
        rows.append(-torch.log(torch.exp(t[a % B] @ p[a % B] / tau) / den))
    return torch.stack(rows).mean()

def test_contrastive_loss_of_one_pair_is_the_formula_and_symmetric():
    ("06_phi checks batches of 6 at two temperatures; here a batch of one pair (one negative a "
     "view).")
    g, tau = torch.Generator().manual_seed(0), 0.25
    v1, v2 = torch.randn(1, 8, generator=g) * 3, torch.randn(1, 8, generator=g)
    loss = contrastive_loss(v1, v2, tau).item()
    for what, ref in (('the formula', direct_formula(v1, v2, tau).item()),
                      ('the loss of (v2, v1)', contrastive_loss(v2, v1, tau).item())):
        assert abs(loss - ref) <= 1e-6, f'loss {loss:.8g} vs {what} {ref:.8g}: |delta| > 1e-6'

def test_contrastive_loss_matches_the_original(shared_dir):
    gp = shared_dir / 'golden' / 'searle_golden.pt'
    if not gp.is_file(): pytest.skip(f'{gp} is absent')
    g = load_tensors(gp)
    ours = contrastive_loss(g['contrastive_v1'], g['contrastive_v2'], 0.25).item()
    theirs = g['contrastive_loss_tau0.25'].item()
    assert abs(ours - theirs) <= 1e-6, f'loss {ours:.8g}, the original {theirs:.8g}: |delta| > 1e-6'

# ---- checkpoints

def test_released_format_loads_and_wrong_shapes_fail_clearly(tmp_path):
    phi = Phi(512, 2048, 512)
    assert sum(p.numel() for p in phi.parameters()) == 6_296_064
    # exactly the release's layout
    torch.save({'Phi': phi.state_dict()}, tmp_path / 'SEARLE_ViT-B32.pt')
    loaded = load_phi(tmp_path / 'SEARLE_ViT-B32.pt', device='cpu')
    assert max_diff(loaded, phi) == 0 and not loaded.training
    (tmp_path / 'cache').mkdir()
    os.replace(tmp_path / 'SEARLE_ViT-B32.pt', tmp_path / 'cache' / 'SEARLE_ViT-B32.pt')
    assert max_diff(load_phi('searle', device='cpu', cache_dir=tmp_path / 'cache'), phi) == 0
    sd = phi.state_dict(); sd['layers.3.weight'] = torch.zeros(2048, 1024)
    torch.save({'Phi': sd}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError,
                       match=r"'layers\.3\.weight' has shape \(2048, 1024\); expected \(2048, "
                             r"2048\)") as e:
        load_phi(tmp_path / 'bad.pt', device='cpu')
    assert 'bad.pt' in str(e.value)
    # B/32 weights under the XL name
    torch.save({'Phi': Phi(512, 2048, 512).state_dict()}, tmp_path / 'cache' / 'SEARLE_ViT-L14.pt')
    with pytest.raises(ValueError, match=r"'layers\.0\.weight' has shape \(2048, 512\); "
                                         r"expected \(3072, 768\)"):
        load_phi('searle-xl', cache_dir=tmp_path / 'cache')

def test_our_checkpoints_load(tmp_path):
    phi = Phi(16, 64, 8, dropout=0.1); save_phi(phi, tmp_path / 'p.pt', epoch=3)
    assert max_diff(load_phi(tmp_path / 'p.pt', device='cpu'), phi) == 0

def test_missing_release_offline_is_one_clear_error(tmp_path, monkeypatch):
    def no_network(*a, **k): raise urllib.error.URLError('network is unreachable')
    monkeypatch.setattr(urllib.request, 'urlopen', no_network)
    monkeypatch.delenv('SEARLE_OFFLINE', raising=False)
    with pytest.raises(FileNotFoundError) as e: load_phi('searle-xl', cache_dir=tmp_path)
    msg = str(e.value)
    assert (str(tmp_path / 'SEARLE_ViT-L14.pt') in msg
            and PHI_RELEASE_URL + 'SEARLE_ViT-L14.pt' in msg and 'unreachable' in msg)
    called = []
    monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: called.append(a) or no_network())
    monkeypatch.setenv('SEARLE_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='SEARLE_ViT-B32.pt'):
        load_phi('searle', cache_dir=tmp_path)
    # SEARLE_OFFLINE=1 never touches the network
    assert called == []
    assert not list(tmp_path.iterdir())

# ---- runs in subprocesses: kill -9 and resume, two processes

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_phi import world, PHRASES
    from searle.clip import build_clip
    from searle.phi import PhiConfig, train_phi
    torch.set_num_threads(1)
    out, mode = sys.argv[1], sys.argv[2]
    names, feats, tokens, table = world(128 if mode == 'kill' else 64)
    m = build_clip('tiny')
    if mode == 'kill':
        train_phi(m, names, feats, tokens, table, PHRASES,
                  PhiConfig(epochs=8, batch_size=16, lr=1e-3, save_every=1), out, device='cpu',
                  progress=False)
    else:
        for dropout in (0.0, 0.5):
            train_phi(m, names, feats, tokens, table, PHRASES,
                      PhiConfig(epochs=3, batch_size=16, lr=1e-3, dropout=dropout),
                      f'{{out}}/dropout{{dropout}}', device='cpu', progress=False)
""")

@pytest.fixture(scope='module')
def script(tmp_path_factory):
    p = tmp_path_factory.mktemp('phi') / 'job.py'
    p.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    return p

def _run(args, **kw):
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       timeout=600, **kw)
    assert r.returncode == 0, r.stderr[-3000:]

def test_sigkill_then_resume_gives_the_uninterrupted_run(script, tmp_path):
    _run([script, tmp_path / 'clean', 'kill'])
    out = tmp_path / 'killed'
    p = subprocess.Popen([sys.executable, script, out, 'kill'], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while (time.time() < deadline and not (out / 'checkpoints' / 'phi_epoch0003.pt').exists()
           and p.poll() is None):
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = sorted(x.name for x in (out / 'checkpoints').glob('phi_epoch*.pt'))
    assert 3 <= len(done) < 8, f'killed after {done}: the kill did not land mid-run'
    assert not (out / 'phi_final.pt').exists()
    _run([script, out, 'kill'])
    clean, resumed = (load_phi(tmp_path / 'clean' / 'phi_final.pt', device='cpu'),
                      load_phi(out / 'phi_final.pt', device='cpu'))
    d = max_diff(clean, resumed)
    assert d <= 1e-6, f'killed after {done[-1]}: max |delta| {d:.3g} off the clean run (> 1e-6)'
    moved = max_diff(clean, Phi(64, 256, 64))                             # and it did train
    assert moved > 1e-3, f'the weights moved by {moved:.3g} at most (<= 1e-3)'
    assert [r['epoch'] for r in load_json(out / 'log.json')] == list(range(1, 9))
    ck = load_tensors(out / 'checkpoints' / 'phi_epoch0008.pt')
    assert ck['epoch'] == 8 and set(ck) >= {'Phi', 'optimizer', 'config', 'log'}

def test_two_processes_give_the_weights_of_one(script, tmp_path):
    _run([script, tmp_path / 'one', 'two'])
    _run(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', script,
          tmp_path / 'two', 'two'],
         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    for dropout in ('0.0', '0.5'):
        a, b = tmp_path / 'one' / f'dropout{dropout}', tmp_path / 'two' / f'dropout{dropout}'
        assert (load_json(a / 'config.json')['processes'] == 1
                and load_json(b / 'config.json')['processes'] == 2)
        one, two = (load_phi(a / 'phi_final.pt', device='cpu'),
                    load_phi(b / 'phi_final.pt', device='cpu'))
        d = max_diff(one, two)
        assert d <= 1e-5, f'dropout {dropout}: two processes vs one, max |delta| {d:.3g} > 1e-5'
        moved = max_diff(one, Phi(64, 256, 64))
        assert moved > 1e-3, f'dropout {dropout}: the weights moved by {moved:.3g} at most'
        la, lb = load_json(a / 'log.json'), load_json(b / 'log.json')
        assert len(la) == len(lb) == 3, (len(la), len(lb))
        d = max(abs(x['loss'] - y['loss']) for x, y in zip(la, lb))   # global losses, not a half's
        assert d <= 1e-5, f'dropout {dropout}: logged losses differ by up to {d:.3g} (> 1e-5)'

# ---- the command killed (SIGKILL) at several points, mid-epoch too: each resumed run is the clean

@pytest.fixture(scope='module')
def phi_inputs(tmp_path_factory):
    "A small world's gallery folder, its concept table and OTI tokens (by the commands), phrases."
    from searle import world as w
    from searle.phrases import save_phrases
    d = tmp_path_factory.mktemp('phi_cmd')
    root = w.build_world(d / 'w', seed=5, n_gallery=60, n_queries=4, n_test=0, n_unlabeled=0,
                         progress=False)
    ph = {c: [f'a photo of {c} that is here', f'a photo of {c} on a table', f'a {c} seen from afar']
          for c in w.world_concepts()}
    save_phrases(ph, d / 'phrases.json')
    imgs, clip = root / 'COCO2017_unlabeled' / 'unlabeled2017', w.world_clip_path()
    on = ('--dataset', 'folder', '--dataset-path', imgs, '--clip-model', clip, '--quiet')
    voc = root / 'concepts.csv'
    _cmd(['searle-concepts', '--out', d / 'c.csv', '--vocabulary', voc, '--top-k', 20, *on])
    _cmd(['searle-oti', d / 'c.csv', d / 'phrases.json', '--steps', 5, '--out', d / 'oti', *on])
    return (d / 'oti' / 'oti_pseudo_tokens.pt', d / 'c.csv', d / 'phrases.json', *on,
            '--epochs', 30, '--batch-size', 8,
            '--top-k', 10, '--save-every', 1, '--no-progress')

CMD_ENV = {**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
           'OMP_NUM_THREADS': '1'}

def _cmd(args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                       env=CMD_ENV)
    assert r.returncode == 0, r.stderr[-3000:]

def test_train_phi_killed_anywhere_resumes_to_the_uninterrupted_weights(phi_inputs, tmp_path):
    _cmd(['searle-train-phi', *phi_inputs, '--out', tmp_path / 'clean'])
    clean = load_tensors(tmp_path / 'clean' / 'phi_final.pt')['Phi']
    losses = [r['loss'] for r in load_json(tmp_path / 'clean' / 'log.json')]
    for k in (5, 15, 25):                   # killed in the epoch after checkpoint k (mid-epoch)
        out = tmp_path / f'killed{k}'
        p = subprocess.Popen([str(a) for a in ('searle-train-phi', *phi_inputs, '--out', out)],
                             env=CMD_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        ck = out / 'checkpoints' / f'phi_epoch{k:04d}.pt'
        while time.time() < deadline and not ck.exists() and p.poll() is None:
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL); p.wait()
        done = sorted(x.name for x in (out / 'checkpoints').glob('phi_epoch*.pt'))
        assert k <= len(done) < 30 and not (out / 'phi_final.pt').exists(), \
            f'killed after {done[-1:]}: not mid-run'
        _cmd(['searle-train-phi', *phi_inputs, '--out', out])
        resumed = load_tensors(out / 'phi_final.pt')['Phi']
        diff = max((clean[n] - resumed[n]).abs().max().item() for n in clean)
        assert diff == 0, f'killed after {done[-1]}: max |delta| {diff:.3g} off the clean run'
        again = [r['loss'] for r in load_json(out / 'log.json')]
        assert again == losses, f'killed after {done[-1]}: other losses'

# ---- resuming checks the data

def test_resume_with_other_targets_or_clip_is_refused_and_names_what_differs(tmp_path):
    m = build_clip('tiny')
    names, feats, tokens, table = world(32)
    cfg = PhiConfig(epochs=1, batch_size=16, lr=1e-3, save_every=1)
    train_phi(m, names, feats, tokens, table, PHRASES, cfg, tmp_path, device='cpu', progress=False)
    # the same data: resumes
    train_phi(m, names, feats, tokens.clone(), table, PHRASES, cfg, tmp_path, device='cpu',
              progress=False)
    other = tokens.clone(); other[5, 3] += 1e-3                           # one target, slightly off
    with pytest.raises(ValueError) as e:
        train_phi(m, names, feats, other, table, PHRASES, cfg, tmp_path, device='cpu',
                  progress=False)
    msg = str(e.value)
    assert (msg.startswith("`inputs.targets`: this folder was made with '")
            and 'phi_epoch0001.pt' in msg), msg
    assert 'inputs.features' not in msg and 'inputs.images' not in msg, msg
    with pytest.raises(ValueError, match="^`inputs.features`: this folder was made with '"):
        train_phi(m, names, feats * 2, tokens, table, PHRASES, cfg, tmp_path, device='cpu',
                  progress=False)
    with pytest.raises(ValueError, match="^`--clip-model`: this folder was made with '") as e:
        train_phi(build_clip('tiny', seed=3), names, feats, tokens, table, PHRASES, cfg, tmp_path,
                  device='cpu', progress=False)
    assert 'inputs.' not in str(e.value), str(e.value)   # the data is the same

def test_concepts_without_phrases_are_left_out_with_one_warning(caplog):
    names, feats, tokens, table = world(32)
    gappy = {n: ['owl', *cs] for n, cs in table.items()}
    with caplog.at_level(logging.WARNING, logger='searle.phi'):
        a = train_phi(build_clip('tiny'), names, feats, tokens, gappy, PHRASES,
                      PhiConfig(epochs=1, batch_size=16), device='cpu', progress=False,
                      meta={'phrases': 'phrases.json'})
    warned = [r.getMessage() for r in caplog.records if r.name == 'searle.phi'
              and r.levelno == logging.WARNING]
    assert warned == ["1 of 5 concepts of the table's top-150 have no phrases in phrases.json "
                      "(e.g. 'owl'); "
                      "they are left out of the regularisation"], warned
    b = train_phi(build_clip('tiny'), names, feats, tokens, table, PHRASES,
                  PhiConfig(epochs=1, batch_size=16), device='cpu', progress=False)
    # 'owl' never drawn: the run without it
    assert max_diff(a, b) == 0
