"""The foundation: a fresh import touches neither CUDA nor the network; the trimmed pseudo-token
encoder on prompts of every length and the original code's golden values; targetpad's padding; a
failed CLIP download. (02_clip tests the encoder against CLIP's own; test_backbones.py the
full-size ones.)"""
import os, subprocess, sys, textwrap
import numpy as np, pytest, torch
from PIL import Image
from searle.clip import *
from searle.core import load_tensors


def test_fresh_import_touches_neither_cuda_nor_network():
    code = textwrap.dedent("""
        import socket, pkgutil, importlib
        def refuse(*a, **k): raise AssertionError('network used at import')
        socket.socket.connect = refuse
        socket.create_connection = refuse; socket.getaddrinfo = refuse
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


def test_trimmed_equals_untrimmed_and_gradient_reaches_token():
    m = build_clip('tiny', seed=1)
    prompts = ['$'] + [f'a photo of $ that {"is very " * k}red' for k in range(1, 12)]
    v = (torch.randn(len(prompts), 64) * 0.02).requires_grad_()
    a = encode_with_pseudo_tokens(m, prompts, v, trim=True)
    b = encode_with_pseudo_tokens(m, prompts, v, trim=False)
    d = (a - b).abs().max().item()
    assert d <= 1e-5, f'trimmed vs untrimmed: max |delta| {d:.3g} > 1e-5'
    a.pow(2).sum().backward()
    assert v.grad is not None, 'no gradient reached the pseudo tokens'
    none = (v.grad.abs().sum(1) == 0).nonzero().flatten().tolist()
    assert none == [], f'prompts {none} got no gradient'   # every prompt's token gets a gradient


def test_golden_parity_with_original_code(shared_dir):
    g = load_tensors(shared_dir / 'golden' / 'searle_golden.pt')
    torch.manual_seed(0)
    m = build_clip(g['clip_config'], seed=None)
    d = abs(m.token_embedding.weight.sum().item() - float(g['encode_first_weight_sum']))
    assert d < 1e-3, f"not the original's seeded CLIP: weight sum off by {d:.3g} (>= 1e-3)"
    with torch.no_grad():
        for pseudo, want in ((g['encode_pseudo'], 'encode_per_prompt'),
                             (g['encode_pseudo'][0], 'encode_shared')):
            ours = encode_with_pseudo_tokens(m, g['encode_prompts'], pseudo)
            d = (ours - g[want]).abs().max().item()
            assert d <= 1e-5, f'{want}: max |delta| {d:.3g} > 1e-5'
    def pattern(w, h):
        y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing='ij')
        return Image.fromarray(((7 * x + 3 * y + 50 * c) % 256).astype(np.uint8))
    out = torch.stack([make_preprocess('targetpad', 64)(pattern(w, h)) for w,
                       h in g['targetpad_sizes']])
    d = (out - g['targetpad_outputs']).abs().max().item()
    assert d <= 1e-6, f'targetpad: max |delta| {d:.3g} > 1e-6'


# 02_clip tests the landscape case's rows; here the square image kept whole, the portrait's columns
@pytest.mark.parametrize('size,expected,pad', [((100, 100), (100, 100), (0, 0)),
                                               ((100, 400), (320, 400), (110, 0))])
def test_targetpad_pads_as_spec_says(size, expected, pad):
    img = Image.new('RGB', size, (255, 255, 255))
    out = np.asarray(TargetPad(1.25)(img))
    assert out.shape[:2] == (expected[1], expected[0])
    hp, vp = pad
    # the image, unchanged, in the middle
    assert out[vp:vp + size[1], hp:hp + size[0]].min() == 255
    # everything else is black padding
    assert out.sum() == 255 * 3 * size[0] * size[1]


def test_a_failed_clip_download_names_the_file_and_the_address(tmp_path, monkeypatch):
    "The download is tried and fails as it does offline: the error names where to put which file."
    import urllib.error, urllib.request
    def offline(*a, **k): raise urllib.error.URLError('offline')
    monkeypatch.delenv('SEARLE_OFFLINE', raising=False)
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(FileNotFoundError) as e:
        load_clip('ViT-B/32', download_root=tmp_path / 'cache')
    assert (str(tmp_path / 'cache' / 'ViT-B-32.pt') in str(e.value)
            and 'openaipublic' in str(e.value))
