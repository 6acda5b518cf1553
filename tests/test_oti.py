"""OTI: results independent of batch size, order and process count; kill -9 and resume; the
original's batch-mean update. (05_oti tests that the tokens retrieve their own images.)"""
import logging, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from searle.clip import build_clip, encode_with_pseudo_tokens, load_pseudo_tokens
from searle.core import save_json
from searle.oti import OTIConfig, invert, run_oti
from searle.runs import Job

QUIET = Job(progress=False)  # how the tests' runs go: no progress bars

PHRASES = {'dog': ['a photo of dog that runs on the beach', 'a photo of dog that sleeps',
                   'a dog and another dog'],
           'cat': ['a photo of cat that purrs', 'a photo of cat on a red sofa'],
           'tree': ['a photo of tree that is tall and green']}

def world(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = [f'img{i:03d}.jpg' for i in range(n)]
    feats = torch.randn(n, 64, generator=g)
    concepts = ['dog', 'cat', 'tree']
    table = {nm: [concepts[(i + j) % 3] for j in range(3)] for i, nm in enumerate(names)}
    return names, feats, table

# A job that a test can run in a subprocess, kill, and run again.
SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_oti import world, PHRASES
    from searle.clip import build_clip
    from searle.oti import OTIConfig, run_oti
    from searle.runs import Job
    torch.set_num_threads(1)
    names, feats, table = world()
    run_oti(build_clip('tiny'), (names, feats), table, PHRASES, sys.argv[1],
            OTIConfig(steps=int(sys.argv[2]), batch_size=2), job=Job(progress=False))
""")

@pytest.fixture(scope='module')
def script(tmp_path_factory):
    p = tmp_path_factory.mktemp('oti') / 'job.py'
    p.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    return p

def test_batch_size_and_order_do_not_matter():
    m = build_clip('tiny')
    names, feats, table = world()
    a = invert(m, names, feats, table, PHRASES, OTIConfig(steps=25, batch_size=4), progress=False)
    b = invert(m, names, feats, table, PHRASES, OTIConfig(steps=25, batch_size=8), progress=False)
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(1))
    c = invert(m, [names[i] for i in perm], feats[perm], table, PHRASES,
               OTIConfig(steps=25, batch_size=4), progress=False)
    for what, d in (('batch 4 vs 8, EMA', (a.ema_tokens - b.ema_tokens).abs().max().item()),
                    ('batch 4 vs 8, tokens', (a.tokens - b.tokens).abs().max().item()),
                    ('another order, EMA', (a.ema_tokens[perm] - c.ema_tokens).abs().max().item())):
        assert d <= 1e-5, f'{what}: max |delta| {d:.3g} > 1e-5'
    # and the images did get different tokens
    assert not torch.allclose(a.tokens[0], a.tokens[1])

def test_sigkill_then_resume_gives_the_clean_run(script, tmp_path):
    steps = '80'
    clean = subprocess.run([sys.executable, script, tmp_path / 'clean', steps], capture_output=True,
                           text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    out = tmp_path / 'killed'
    p = subprocess.Popen([sys.executable, script, out, steps], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / 'shards').glob('batch-*.pt'))) < 2:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = len(list((out / 'shards').glob('batch-*.pt')))
    assert 2 <= done < 6, f'killed after {done} of 6 shards: the kill did not land mid-run'
    assert not (out / 'oti_pseudo_tokens.pt').exists()
    again = subprocess.run([sys.executable, script, out, steps], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    n1, t1 = load_pseudo_tokens(tmp_path / 'clean' / 'oti_pseudo_tokens.pt')
    n2, t2 = load_pseudo_tokens(out / 'oti_pseudo_tokens.pt')
    assert n1 == n2, (n1, n2)
    d = (t1 - t2).abs().max().item()
    assert d <= 1e-6, f'killed after {done} of 6 shards: max |delta| {d:.3g} off the clean run'

def test_two_processes_give_the_tokens_of_one(script, tmp_path):
    one = subprocess.run([sys.executable, script, tmp_path / 'one', '30'], capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                          '--nproc_per_node', '2', script, tmp_path / 'two', '30'],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert two.returncode == 0, two.stderr[-3000:]
    n1, t1 = load_pseudo_tokens(tmp_path / 'one' / 'oti_pseudo_tokens.pt')
    n2, t2 = load_pseudo_tokens(tmp_path / 'two' / 'oti_pseudo_tokens.pt')
    assert n1 == n2, (n1, n2)
    d = (t1 - t2).abs().max().item()
    assert d <= 1e-5, f'two processes vs one: max |delta| {d:.3g} > 1e-5'
    # merged by the first process, then removed
    assert not (tmp_path / 'two' / 'shards').exists()

def test_concepts_without_phrases_are_left_out_with_one_warning(tmp_path, caplog):
    m = build_clip('tiny')
    names, feats, table = world(4)
    save_json(PHRASES, tmp_path / 'phrases.json')
    # two concepts the phrase file lacks
    gappy = {n: ['owl', *cs, 'fish'] for n, cs in table.items()}
    cfg = OTIConfig(steps=5, batch_size=2)
    with caplog.at_level(logging.WARNING, logger='searle.oti'):
        path = run_oti(m, (names, feats), gappy, tmp_path / 'phrases.json', tmp_path / 'run', cfg,
                       job=QUIET)
    warned = [r.getMessage() for r in caplog.records if r.name == 'searle.oti'
              and r.levelno == logging.WARNING]
    # once per run, not once per batch
    assert len(warned) == 1, warned
    assert ("2 of 5 concepts of the table's top-15" in warned[0]
            and "'fish', 'owl'" in warned[0]), warned[0]
    assert str(tmp_path / 'phrases.json') in warned[0]
    # the same pools, so the same tokens
    clean = invert(m, names, feats, table, PHRASES, cfg, progress=False)
    assert torch.equal(load_pseudo_tokens(path)[1], clean.ema_tokens)

def test_resume_refuses_other_images_of_the_same_number_and_names_the_key(tmp_path, monkeypatch):
    m = build_clip('tiny')
    names, feats, table = world(6)
    monkeypatch.chdir(tmp_path)
    save_json(PHRASES, tmp_path / 'phrases.json')
    save_json({'tree': PHRASES['tree']}, tmp_path / 'other.json')
    cfg = OTIConfig(steps=2, batch_size=3)
    run_oti(m, (names, feats), table, 'phrases.json', 'run', cfg, job=QUIET)
    # the same files: resumes
    run_oti(m, (names, feats), table, tmp_path / 'phrases.json', tmp_path / 'run', cfg, job=QUIET)
    # same length, same set, another order
    swapped = [names[1], names[0], *names[2:]]
    with pytest.raises(ValueError) as e:
        run_oti(m, (swapped, feats), table, 'phrases.json', tmp_path / 'run', cfg, job=QUIET)
    msg = str(e.value)
    assert (str(tmp_path / 'run' / 'config.json') in msg
            and "`inputs.images`: this folder was made with '" in msg), msg
    assert 'n_images' not in msg, msg
    with pytest.raises(ValueError,
                       match=r"`inputs.phrases`: this folder was made with '.*phrases\.json', now "
                             r"'.*other\.json'"):
        run_oti(m, (names, feats), table, 'other.json', 'run', cfg, job=QUIET)


def original_batch_mean(model, feats, names, pools, cfg, separate):
    """The original's math, written out: one batch, the batch-MEAN loss, AdamW with eps 1e-8.
    separate=True encodes as the original does (templates, pseudo phrases and real phrases in three
    77-token passes); False encodes templates and pseudo phrases in one trimmed pass, as searle
    does, so only the optimiser math differs."""
    from searle.concepts import TEMPLATES
    from searle.clip import encode_text, tokenize
    from searle.oti import draw
    from searle.phrases import make_pseudo_phrase
    W, B = model.token_embedding.weight.shape[1], len(names)
    draws = [draw(n, len(p), W, cfg) for n, p in zip(names, pools)]
    v = torch.stack([d.init for d in draws]).requires_grad_()
    ema = v.detach().clone()
    opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-8)
    img = F.normalize(feats, dim=-1)
    model.requires_grad_(False)
    for s in range(cfg.steps):
        chosen = [pool[int(d.phrase[s])] for pool, d in zip(pools, draws)]
        templates = [TEMPLATES[int(d.template[s])].format(' $ ') for d in draws]
        pseudo = [make_pseudo_phrase(p, c) for c, p in chosen]
        if separate:
            f_t = encode_with_pseudo_tokens(model, templates, v, trim=False)
            f_p = encode_with_pseudo_tokens(model, pseudo, v, trim=False)
            with torch.no_grad():
                f_r = F.normalize(model.encode_text(tokenize([p for _, p in chosen])), dim=-1)
        else:
            f_t, f_p = encode_with_pseudo_tokens(model, templates + pseudo,
                                                 torch.cat([v, v])).split(B)
            with torch.no_grad():
                f_r = F.normalize(encode_text(model, [p for _, p in chosen]), dim=-1)
        l_cos = 1 - (F.normalize(f_t, dim=-1) * img).sum(-1)
        l_gpt = 1 - (F.normalize(f_p, dim=-1) * f_r).sum(-1)
        loss = (cfg.lambda_cos * l_cos + cfg.lambda_gpt * l_gpt) / (cfg.lambda_cos + cfg.lambda_gpt)
        opt.zero_grad(); loss.mean().backward(); opt.step()
        with torch.no_grad(): ema.mul_(cfg.ema_decay).add_(v.detach(), alpha=1 - cfg.ema_decay)
    model.requires_grad_(True)
    return v.detach(), ema


FULL_SIZE = pytest.mark.skipif(os.environ.get('SEARLE_SLOW') != '1',
                               reason='full-size ViT-B/32 (about a minute of CPU): SEARLE_SLOW=1 '
                                      'runs it')

@pytest.mark.parametrize('preset,n,separate',
                         [('tiny', 16, True), pytest.param('ViT-B/32', 4, False, marks=FULL_SIZE)])
def test_full_batch_equals_the_original_batch_mean_update(preset, n, separate):
    ("A full batch (n = math_batch_size) gives the original's tokens to <= 1e-6 after 20 steps; "
     "compute grouping does not matter.")
    from searle.oti import invert_batch, phrase_pool
    m = build_clip(preset)
    D = m.text_projection.shape[1]
    names = [f'img{i:03d}.jpg' for i in range(n)]
    feats = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    concepts = list(PHRASES)
    pools = [phrase_pool([concepts[(i + j) % 3] for j in range(3)], PHRASES, set())
             for i in range(n)]
    # a full batch of the math: n images, math_batch_size n
    cfg = OTIConfig(steps=20, batch_size=n, math_batch_size=n)
    ref, ref_ema = original_batch_mean(m, feats, names, pools, cfg, separate)
    tok, ema, _ = invert_batch(m, feats, names, pools, cfg)
    dt, de = (tok - ref).abs().max().item(), (ema - ref_ema).abs().max().item()
    assert dt <= 1e-6 and de <= 1e-6, f'max |delta| tokens {dt:.3g}, EMA {de:.3g} (> 1e-6)'
    # the eps scaling is what makes them equal: with the plain 1e-8 on summed losses they drift
    # apart
    if preset == 'tiny':
        off, _, _ = invert_batch(m, feats, names, pools,
                                 OTIConfig(steps=20, batch_size=n, math_batch_size=1))
        d = (off - ref).abs().max().item()   # over 4x the agreement asked for
        assert d > 4e-6, f'the plain eps left the tokens within {d:.3g} (<= 4e-6): not a test of it'
    # each image's result is independent of compute grouping
    k = n // 2 - 1
    part, part_ema, _ = invert_batch(m, feats[k:k + 3], names[k:k + 3], pools[k:k + 3], cfg)
    dt, de = (part - tok[k:k + 3]).abs().max().item(), (part_ema - ema[k:k + 3]).abs().max().item()
    assert dt <= 1e-6 and de <= 1e-6, f'3 of {n} alone: max |delta| tokens {dt:.3g}, EMA {de:.3g}'
