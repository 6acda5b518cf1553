"""The foundation: a fresh import touches neither CUDA nor the network; CLIP loading; pseudo-token
encoding against CLIP's own encoder (tiny and full-size ViT-B/32) and the original code's golden values;
targetpad's exact padding."""
import os, subprocess, sys, textwrap
import numpy as np, pytest, torch
from PIL import Image
from searle.clip import *
from searle.core import load_tensors


def test_fresh_import_touches_neither_cuda_nor_network():
    code = textwrap.dedent("""
        import socket, pkgutil, importlib
        def refuse(*a, **k): raise AssertionError('network used at import')
        socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse
        import searle
        mods = [m.name for m in pkgutil.iter_modules(searle.__path__) if not m.name.startswith('_')]
        for m in mods: importlib.import_module('searle.' + m)
        import torch
        assert not torch.cuda.is_initialized(), 'CUDA initialised at import'
        print('imported', sorted(mods))
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'core' in r.stdout and 'clip' in r.stdout


@pytest.mark.parametrize('preset', ['tiny', 'ViT-B/32'])
def test_real_word_in_place_of_pseudo_token_matches_encode_text(preset):
    m = build_clip(preset, seed=0)
    prompts = ['a photo of $', 'a photo of $ that is red and lies on a sandy beach under the sun', 'we see a $ in this illustration']
    dog = m.token_embedding.weight[tokenize('dog')[0, 1]].detach()
    with torch.no_grad():
        ours = encode_with_pseudo_tokens(m, prompts, dog)
        ref = m.encode_text(tokenize([p.replace('$', 'dog') for p in prompts]))
    assert (ours - ref).abs().max().item() <= 1e-5


def test_trimmed_equals_untrimmed_and_gradient_reaches_token():
    m = build_clip('tiny', seed=1)
    prompts = ['$'] + [f'a photo of $ that {"is very " * k}red' for k in range(1, 12)]
    v = (torch.randn(len(prompts), 64) * 0.02).requires_grad_()
    a = encode_with_pseudo_tokens(m, prompts, v, trim=True)
    b = encode_with_pseudo_tokens(m, prompts, v, trim=False)
    assert (a - b).abs().max().item() <= 1e-5
    a.pow(2).sum().backward()
    assert v.grad is not None and (v.grad.abs().sum(1) > 0).all()   # every prompt's token gets a gradient


def test_golden_parity_with_original_code(shared_dir):
    g = load_tensors(shared_dir / 'golden' / 'searle_golden.pt')
    torch.manual_seed(0)
    m = build_clip(g['clip_config'], seed=None)
    assert abs(m.token_embedding.weight.sum().item() - float(g['encode_first_weight_sum'])) < 1e-3
    with torch.no_grad():
        assert (encode_with_pseudo_tokens(m, g['encode_prompts'], g['encode_pseudo']) - g['encode_per_prompt']).abs().max() <= 1e-5
        assert (encode_with_pseudo_tokens(m, g['encode_prompts'], g['encode_pseudo'][0]) - g['encode_shared']).abs().max() <= 1e-5
    def pattern(w, h):
        y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing='ij')
        return Image.fromarray(((7 * x + 3 * y + 50 * c) % 256).astype(np.uint8))
    out = torch.stack([make_preprocess('targetpad', 64)(pattern(w, h)) for w, h in g['targetpad_sizes']])
    assert (out - g['targetpad_outputs']).abs().max() <= 1e-6


@pytest.mark.parametrize('size,expected,pad', [((100, 100), (100, 100), (0, 0)),
                                               ((300, 100), (300, 240), (0, 70)),
                                               ((100, 400), (320, 400), (110, 0))])
def test_targetpad_pads_as_spec_says(size, expected, pad):
    img = Image.new('RGB', size, (255, 255, 255))
    out = np.asarray(TargetPad(1.25)(img))
    assert out.shape[:2] == (expected[1], expected[0])
    hp, vp = pad
    assert out[vp:vp + size[1], hp:hp + size[0]].min() == 255          # the image, unchanged, in the middle
    assert out.sum() == 255 * 3 * size[0] * size[1]                     # everything else is black padding


def test_load_clip_round_trip_and_offline_error(tmp_path, monkeypatch):
    m = build_clip('tiny', seed=3)
    save_clip(m, tmp_path / 'm.pt')
    m2 = load_clip(tmp_path / 'm.pt', device='cpu')
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()): assert torch.equal(a, b), k
    torch.save(build_clip('ViT-B/32', seed=0).state_dict(), tmp_path / 'b32.pt')   # a plain state dict, config inferred
    assert clip_config(load_clip(tmp_path / 'b32.pt', device='cpu')) == CLIP_PRESETS['ViT-B/32']
    import urllib.error, urllib.request
    def offline(*a, **k): raise urllib.error.URLError('offline')
    monkeypatch.delenv('SEARLE_OFFLINE', raising=False)                   # the download is attempted ...
    monkeypatch.setattr(urllib.request, 'urlopen', offline)               # ... and fails as it does offline
    with pytest.raises(FileNotFoundError) as e: load_clip('ViT-B/32', download_root=tmp_path / 'cache')
    assert str(tmp_path / 'cache' / 'ViT-B-32.pt') in str(e.value) and 'openaipublic' in str(e.value)
