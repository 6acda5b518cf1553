"""LinCIR against its authors' code (tests/golden/lincir_golden.pt, made by
make_lincir_golden.py from navervision/lincir), and its released checkpoint format."""
import importlib.util, os, pickle, random
from collections import OrderedDict
from pathlib import Path
import pytest, torch
from transformers import CLIPConfig, CLIPModel
from searle.clip import encode_text, encode_with_pseudo_tokens, tokenize
from searle.core import load_tensors
from searle.data import Query
from searle.phi import Phi
from searle.lincir import (LINCIR_RELEASES, LINCIR_TEMPLATE, LinCIRConfig,
                           lincir_step, lincir_token_fn, load_lincir, load_lincir_token_fn,
                           training_tokens)
from searle.retrieval import method_protocol, query_features, query_prompts

HERE = Path(__file__).parent / 'golden'
_spec = importlib.util.spec_from_file_location('maker', HERE / 'make_lincir_golden.py')
maker = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(maker)

@pytest.fixture(scope='module')
def gold(): return load_tensors(HERE / 'lincir_golden.pt')

@pytest.fixture(scope='module')
def clip_and_phi(gold):
    "The golden CLIP text tower (in a transformers 5 CLIPModel) and phi, filled as the maker does."
    tc = dict(gold['text_config']); D = tc.pop('projection_dim')
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=tc, projection_dim=D, vision_config=vision)).eval()
    text = [(n, p) for n, p in model.named_parameters()
            if n.startswith(('text_model.', 'text_projection.'))]
    assert sorted(n for n, _ in text) == gold['param_names']
    maker.fill(text, gold['seed'])
    phi = Phi(D, 4 * D, tc['hidden_size'])
    maker.fill(phi.named_parameters(), gold['seed'] + 1)
    return model.requires_grad_(False), phi

def _delta(a, b): return (a.float() - b.float()).abs().max().item()

@pytest.fixture(scope='module')
def protocol():
    "LinCIR's own evaluation settings, as searle's evaluation reads them."
    p = method_protocol('lincir', 'paper')
    assert (p.template, p.join) == (LINCIR_TEMPLATE, 'both-orders'), p
    return p

def test_cleaning_masking_and_tokens_match_the_original(gold):
    tok, masked = training_tokens(gold['captions'], random.Random(gold['seed']))
    bad = [i for i in range(len(tok)) if not torch.equal(tok[i], gold['tokens'][i])]
    assert not bad, f"captions {bad} tokenise differently: {gold['captions'][bad[0]]!r}"
    bad = [i for i in range(len(tok)) if not torch.equal(masked[i], gold['masked'][i])]
    assert not bad, f"masked captions {bad} differ; theirs: {gold['masked_text'][bad[0]]!r}"

def test_forward_matches_the_original(gold, clip_and_phi, protocol):
    "phi, then CIRR-style prompts made by searle's evaluation (`query_prompts`), encoded."
    model, phi = clip_and_phi
    caps = [p.removeprefix('a photo of $ that ') for p in gold['eval_prompts']]
    prompts = [p for i, c in enumerate(caps)
               for p in query_prompts(Query(str(i), f'ref{i}', [c]), protocol.template,
                                      protocol.join)]
    assert prompts == gold['eval_prompts'], (prompts, gold['eval_prompts'])
    with torch.no_grad():
        tokens = phi.eval()(gold['feats'])
        d = _delta(tokens, gold['eval_tokens'])
        assert d < 1e-6, f'phi forward: max |delta| {d:.2e}'
        for f in (encode_with_pseudo_tokens(model, prompts, tokens),
                  encode_with_pseudo_tokens(model, tokenize(prompts), tokens, every=True)):
            d = _delta(f, gold['eval_features'])
            scale = gold['eval_features'].abs().max()
            assert d < 1e-5, f'prompt features: max |delta| {d:.2e} (scale {scale:.2f})'

def test_fashioniq_features_match_the_original(gold, clip_and_phi, protocol):
    "Their FashionIQ queries (both caption orders, averaged) against searle's `query_features`."
    model, _ = clip_and_phi
    queries = [Query(str(i), ref, caps, target=t) for i, (ref, t, caps) in
               enumerate(gold['fiq_queries'])]
    q = query_features(model, queries, gold['fiq_ref_names'], ref_tokens=gold['eval_tokens'],
                       template=protocol.template, join=protocol.join, precision='fp32')
    d = _delta(q, gold['fiq_features'])
    assert d < 1e-5, f'FashionIQ query features (normalised): max |delta| {d:.2e}'

def test_training_step_matches_the_original(gold, clip_and_phi):
    model, phi0 = clip_and_phi
    phi = Phi(*phi0.dims); phi.load_state_dict(phi0.state_dict())
    with torch.no_grad():
        d = _delta(encode_text(model, gold['tokens']), gold['step_target'])
        assert d < 1e-5, f'caption features: max |delta| {d:.2e}'
    opt = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    torch.manual_seed(gold['seed'] + 3)   # the noise and dropout draws, in the original's order
    loss = lincir_step(phi.train(), model, opt, gold['tokens'], gold['masked'], LinCIRConfig())
    want = gold['step_loss'].item()
    assert abs(loss - want) < 1e-6 * max(1, want), f'loss {loss} vs {want}: {abs(loss - want):.2e}'
    for n, p in phi.named_parameters():
        g = gold['step_grads'][n]
        d = _delta(p.grad, g)
        assert d < 1e-6 + 1e-4 * g.abs().max().item(), \
            f'gradient of {n}: max |delta| {d:.2e} (max |g| {g.abs().max():.2e})'
    for n, w in gold['step_weights_last'].items():
        d = _delta(dict(phi.named_parameters())[n], w)
        assert d < 1e-7, f'{n} after the AdamW step: max |delta| {d:.2e}'

def _released(path, dims=(32, 128, 32), prefix='', extra=None):
    "A file in the released format: torch.save({'Phi': OrderedDict of float32}) (random weights)."
    sd = OrderedDict((prefix + k, torch.randn(v.shape))
                     for k, v in Phi(*dims).state_dict().items())
    torch.save({'Phi': sd, **(extra or {})}, path)
    return sd

def test_released_format_loads(tmp_path):
    dims = LINCIR_RELEASES['lincir-large']['dims']
    sd = _released(tmp_path / 'lincir_large.pt', dims, extra={'epoch': 20000})
    net = load_lincir('lincir-large', device='cpu', cache_dir=tmp_path)   # the name, from the cache
    assert not net.training and net.dims == (768, 3072, 768) and net.searle_source == 'lincir-large'
    assert torch.equal(net.state_dict()['layers.6.weight'], sd['layers.6.weight'])
    x = torch.randn(2, 768)
    fn = lincir_token_fn(net)
    assert fn.__name__ == 'lincir:lincir-large' and torch.equal(fn(x), net(x))

def _one_line_error(exc, fn, *needles):
    with pytest.raises(exc) as e: fn()
    msg = str(e.value)
    assert '\n' not in msg and all(n in msg for n in needles), msg

def test_bad_files_are_one_line_errors(tmp_path):
    p = tmp_path / 'x.pt'
    _released(p, prefix='module.')
    _one_line_error(ValueError, lambda: load_lincir(p), str(p), 'layers.0.weight')  # 'module.' keys
    torch.save({'Phi': {'layers.0.weight': torch.zeros(3)}}, p)
    _one_line_error(ValueError, lambda: load_lincir(p), str(p))
    sd = _released(p); sd['layers.3.weight'] = torch.zeros(5, 5); torch.save({'Phi': sd}, p)
    _one_line_error(ValueError, lambda: load_lincir(p), str(p), 'layers.3.weight')
    torch.save([1, 2], p)
    _one_line_error(ValueError, lambda: load_lincir(p), str(p), 'Phi')
    with open(p, 'wb') as f: pickle.dump({'Phi': OrderedDict(), 'x': Path('/')}, f)
    _one_line_error(ValueError, lambda: load_lincir(p), str(p))
    (tmp_path / 'lincir_large.pt').write_bytes(b'not a torch file')
    release = lambda: load_lincir('lincir-large', cache_dir=tmp_path)
    _one_line_error(ValueError, release, 'lincir_large.pt')
    _released(tmp_path / 'lincir_large.pt')   # right format, wrong size for the release
    _one_line_error(ValueError, release, "'lincir-large'", '(768, 3072, 768)')

def test_missing_release_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv('SEARLE_OFFLINE', '1')
    _one_line_error(FileNotFoundError, lambda: load_lincir('lincir-large', cache_dir=tmp_path),
                    LINCIR_RELEASES['lincir-large']['url'], str(tmp_path / 'lincir_large.pt'))
    _one_line_error(FileNotFoundError, lambda: load_lincir('lincir-xl', cache_dir=tmp_path),
                    "'lincir-large'")

def test_token_fn_refuses_another_clip(tmp_path):
    from searle.clip import build_clip
    _released(tmp_path / 'p.pt', (64, 256, 64))
    fn = load_lincir_token_fn(tmp_path / 'p.pt', build_clip('tiny'))
    assert fn(torch.randn(2, 64)).shape == (2, 64)
    wide = build_clip('ViT-B/32')
    _one_line_error(ValueError, lambda: load_lincir_token_fn(tmp_path / 'p.pt', wide), '512-d')

def test_the_default_tagger_masks_every_attribute_of_the_world_captions():
    "The demo trains on the world's captions: every attribute word in them is a key word."
    from searle.lincir import clean_caption, keyword_runs, mask_caption, simple_tags
    from searle.world import ASPECT_VALUES, all_attrs, caption
    rng, values = random.Random(0), {v for vs in ASPECT_VALUES.values() for v in vs}
    for a in all_attrs():
        c = clean_caption(caption(a, rng, partial=0.25)[0])
        m = mask_caption(c, keyword_runs(simple_tags(c)), rng)
        left = values & set(m.replace(',', ' ').split())
        assert '$' in m and not left, f'{c!r} -> {m!r}: {sorted(left)} left unmasked'
