"""Pic2Word against its authors' released code, on the golden values that
tests/golden/make_pic2word_golden.py computed with their modules (a tiny CLIP of theirs, their
IM2TEXT, their training loss and optimiser groups); its released checkpoint format; the three
CLIP families."""
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from searle.clip import ImageList, backbone, build_clip, encode_with_pseudo_tokens
from searle.data import Query
from searle.pic2word import (PIC2WORD_TEMPLATE, Pic2Word, Pic2WordConfig, clip_logit_scale,
                             load_pic2word, load_pic2word_token_fn, pic2word_lr,
                             pic2word_optimizer, pic2word_step, pic2word_text_features,
                             train_pic2word)
from searle.retrieval import method_protocol, query_features, query_prompts

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / 'golden' / 'pic2word_golden.pt'


def delta(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope='module')
def g():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope='module')
def clip(g):
    "searle's tiny CLIP, the same weights as the authors' CLIP class built with the same seed."
    m = build_clip(g['clip_config'], seed=0)
    assert m.token_embedding.weight.sum().item() == g['clip_token_embedding_sum']
    total = sum(p.double().sum().item() for p in m.parameters())
    assert total == g['clip_param_sum'], (total, g['clip_param_sum'])
    return m


def golden_net(g) -> Pic2Word:
    net = Pic2Word(**g['net_config'])
    net.load_state_dict(g['init'])
    return net


def test_init_matches_theirs(g):
    torch.manual_seed(1)  # as the generator seeds their IM2TEXT
    net = Pic2Word(**g['net_config'])
    for k, v in g['init'].items():
        got = net.state_dict()[k]
        assert torch.equal(got, v), f'{k}: max |delta| {delta(got, v):.2e}'


def test_forward_matches_theirs(g, clip):
    torch.manual_seed(g['images_seed'])
    images = torch.randn(*g['images_shape'])
    with torch.no_grad():
        feats = clip.encode_image(images)
        tokens = golden_net(g).eval()(g['image_features'])
        text = pic2word_text_features(clip, tokens)
    assert delta(feats, g['image_features']) <= 1e-5, delta(feats, g['image_features'])
    assert delta(tokens, g['tokens_eval']) <= 1e-6, delta(tokens, g['tokens_eval'])
    d = delta(text, g['train_text_features'])  # their get_text_features ('a photo of' + token)
    assert d <= 1e-5, f'training prompt features: max |delta| {d:.2e}'


def test_evaluation_prompts_match_theirs(g, clip):
    ("CIRR's and FashionIQ's prompts of their data loaders, encoded by their retrieval encoder, "
     "against the prompts and query features of searle's evaluation under Pic2Word's protocol.")
    p = method_protocol('pic2word', 'paper')
    assert (p.template, p.join) == (PIC2WORD_TEMPLATE, 'second-and-first'), p
    tokens, refs = g['tokens_eval'], [f'r{i}' for i in range(len(g['tokens_eval']))]
    cirr = [Query(f'c{i}', refs[i], [c]) for i, c in enumerate(g['cirr_captions'])]
    fiq = [Query(f'f{i}', refs[3 + i], list(c)) for i, c in enumerate(g['fashioniq_captions'])]
    prompts = lambda qs: [t for q in qs for t in query_prompts(q, p.template, p.join)]
    assert prompts(fiq)[0] == 'a photo of $ , has no sleeves and is longer and blue', prompts(fiq)
    with torch.no_grad():
        d_cirr = delta(encode_with_pseudo_tokens(clip, prompts(cirr), tokens[:3]),
                       g['cirr_features'])
        d_fiq = delta(encode_with_pseudo_tokens(clip, prompts(fiq), tokens[3:5]),
                      g['fashioniq_features'])
    assert d_cirr <= 1e-5 and d_fiq <= 1e-5, f'max |delta| CIRR {d_cirr:.2e}, FashionIQ {d_fiq:.2e}'
    for qs, want in ((cirr, g['cirr_features']), (fiq, g['fashioniq_features'])):
        q = query_features(clip, qs, refs, ref_tokens=tokens, template=p.template, join=p.join,
                           precision='fp32')
        d = delta(q, F.normalize(want, dim=-1))
        assert d <= 1e-6, f'{qs[0].id[0]}: query features (normalised): max |delta| {d:.2e}'


def test_training_steps_match_theirs(g, clip):
    "Two steps of their loss, AdamW groups and schedule, with the same dropout masks (seeded)."
    o = g['opt']
    cfg = Pic2WordConfig(lr=o['lr'], weight_decay=o['weight_decay'], betas=tuple(o['betas']),
                         eps=o['eps'], warmup=o['warmup'])
    net = golden_net(g).train()
    opt, scale = pic2word_optimizer(net, cfg), clip_logit_scale(clip)
    assert abs(scale - g['logit_scale']) <= 1e-6 * g['logit_scale']
    for step, seed in enumerate(g['step_seeds']):
        lr = pic2word_lr(step, o['total'], cfg)
        assert abs(lr - g['step_lrs'][step]) <= 1e-15, (lr, g['step_lrs'][step])
        torch.manual_seed(seed)
        loss = pic2word_step(net, clip, g['image_features'], opt, scale, lr=lr)
        assert abs(loss - g['step_losses'][step]) <= 1e-6, (step, loss, g['step_losses'][step])
        if step == 0:
            for n, p in net.named_parameters():
                d = delta(p.grad, g['step0_grads'][n])
                assert d <= 1e-6 * max(1., g['step0_grads'][n].abs().max().item()), (n, d)
    for k, v in g['after_two_steps'].items():
        d = delta(net.state_dict()[k], v)
        assert d <= 1e-7, f'{k} after two steps: max |delta| {d:.2e}'


def authors_checkpoint(path, net: Pic2Word, clip):
    "A training checkpoint as their src/main.py writes it under DistributedDataParallel."
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, net.dims[0])).sum().backward()
    opt.step()
    torch.save({'epoch': 30, 'name': 'lr=0.0001_wd=0.1_agg=True_model=ViT-L/14',
                'state_dict': {'module.' + k: v for k, v in clip.state_dict().items()},
                'state_dict_img2text': {'module.' + k: v for k, v in net.state_dict().items()},
                'optimizer': opt.state_dict()}, path)


def test_released_format_loads(tmp_path, clip):
    src = Pic2Word(64, 512, 64)
    authors_checkpoint(tmp_path / 'pic2word_model.pt', src, clip)
    net = load_pic2word(tmp_path / 'pic2word_model.pt')
    assert not net.training and net.dims == (64, 512, 64) and net.searle_backbone is None
    for k, v in src.state_dict().items(): assert torch.equal(net.state_dict()[k], v), k
    fn = load_pic2word_token_fn(tmp_path / 'pic2word_model.pt', clip, device='cpu')
    x = torch.randn(3, 64)
    with torch.no_grad(): expected = src.eval()(x)
    assert torch.equal(fn(x), expected)
    assert fn.__name__ == f"pic2word:{tmp_path / 'pic2word_model.pt'}"
    # the cached release, by name
    (tmp_path / 'cache').mkdir()
    os.replace(tmp_path / 'pic2word_model.pt', tmp_path / 'cache' / 'pic2word_model.pt')
    with pytest.raises(ValueError, match=r'Pic2Word\(64, 512, 64\); the release'):
        load_pic2word('pic2word-l14', cache_dir=tmp_path / 'cache')   # not ViT-L/14's widths


def test_release_by_name_from_cache(tmp_path, clip):
    "A ViT-L/14-shaped network in the authors' format, cached under the release's file name."
    (tmp_path / 'cache').mkdir()
    src = Pic2Word(768, 512, 768)
    authors_checkpoint(tmp_path / 'cache' / 'pic2word_model.pt', src, clip)
    net = load_pic2word('pic2word-l14', cache_dir=tmp_path / 'cache')
    assert net.dims == (768, 512, 768) and net.searle_source == 'pic2word-l14'
    for k, v in src.state_dict().items(): assert torch.equal(net.state_dict()[k], v), k
    with pytest.raises(ValueError, match='768-d image features'):
        load_pic2word_token_fn('pic2word-l14', clip, cache_dir=tmp_path / 'cache')  # not ViT-L/14


@pytest.mark.parametrize('obj, message', [
    ({'state_dict': {}}, "'state_dict_img2text'"),
    ([1, 2], 'found list'),
    ({'state_dict_img2text': {'module.fc_out.weight': torch.zeros(4, 4)}}, 'missing'),
    ({'state_dict_img2text': {'layers.0.0.weight': torch.zeros(8, 4), 'layers.0.0.bias':
                              torch.zeros(8), 'fc_out.weight': torch.zeros(4, 7),
                              'fc_out.bias': torch.zeros(4)}}, "'fc_out.weight' has shape"),
    ({'state_dict_img2text': {'layers.0.0.weight': torch.zeros(8), 'layers.0.0.bias':
                              torch.zeros(8), 'fc_out.weight': torch.zeros(4, 8),
                              'fc_out.bias': torch.zeros(4)}}, 'must be 2-d'),
])
def test_bad_files_one_line(tmp_path, obj, message):
    torch.save(obj, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match=message) as e: load_pic2word(tmp_path / 'bad.pt')
    assert '\n' not in str(e.value), str(e.value)


def test_pickled_classes_refused(tmp_path):
    torch.save({'state_dict_img2text': Path('x')}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='refusing to load it'):
        load_pic2word(tmp_path / 'evil.pt')


def test_pickled_classes_refused_in_one_line(tmp_path):
    torch.save({'state_dict_img2text': Path('x')}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError) as e: load_pic2word(tmp_path / 'evil.pt')
    assert '\n' not in str(e.value)


def test_release_not_cached_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('SEARLE_OFFLINE', '1')
    with pytest.raises(FileNotFoundError) as e: load_pic2word('pic2word-l14', cache_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / 'pic2word_model.pt') in msg and 'drive.google.com' in msg, msg
    assert '\n' not in msg


@pytest.mark.parametrize('family', ['tiny', 'open_clip:tiny', 'hf:tiny'])
def test_trains_on_every_family(tmp_path, family):
    model = build_clip(family)
    feats = torch.randn(32, backbone(model).dim)
    cfg = Pic2WordConfig(epochs=3, batch_size=16, warmup=1, middle_dim=32, lr=1e-3)
    net = train_pic2word(model, feats, cfg, out=tmp_path / 'p.pt')
    fn = load_pic2word_token_fn(tmp_path / 'p.pt', model)
    assert fn(feats[:2]).shape == (2, backbone(model).width)
    log = torch.load(tmp_path / 'p.pt', weights_only=True)['log']
    assert len(log) == 3 and all(torch.isfinite(torch.tensor(r['loss'])) for r in log), log
    assert all(p.requires_grad for p in model.parameters())  # CLIP's flags restored
    with pytest.raises(ValueError, match='another CLIP'):
        load_pic2word_token_fn(tmp_path / 'p.pt', build_clip(family, seed=1))


def test_trains_on_images(tmp_path):
    model = build_clip('tiny')
    names, paths = [], []
    for i in range(16):
        p = tmp_path / f'{i}.png'
        Image.new('RGB', (40 + i, 30), (16 * i, 255 - 16 * i, 90)).save(p)
        names.append(f'{i}.png'); paths.append(p)
    cfg = Pic2WordConfig(epochs=2, batch_size=8, warmup=1, middle_dim=16)
    net = train_pic2word(model, ImageList(names, paths), cfg)
    assert net.dims == (64, 16, 64) and not net.training
