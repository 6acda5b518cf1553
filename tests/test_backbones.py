("Full-size backbones of every family: searle's encoder gives each family's own text feature "
 "(fp32, random weights).")
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
import pytest
import torch

from searle.clip import backbone, build_clip, encode_text, encode_with_pseudo_tokens, tokenize

PROMPTS = ['a photo of $', 'this is a photo of a $',
           'a photo of $ that is running on a sandy beach near the water at sunset']


def _check(model, eps=1e-5):
    ("A real word's embedding at `$` gives the family's own feature; trimmed equals untrimmed; "
     "gradients reach the token.")
    bb = backbone(model)
    word = bb.token_embedding.weight[tokenize('dog')[0, 1]].detach()
    real = [p.replace('$', 'dog') for p in PROMPTS]
    with torch.no_grad():
        ref = bb.own_text(tokenize(real))
        ours = encode_with_pseudo_tokens(model, PROMPTS, word)
        full = encode_with_pseudo_tokens(model, PROMPTS, word, trim=False)
        for what, a, b in (("a word at $ vs the family's", ours, ref), ('untrimmed', full, ours),
                           ("encode_text vs the family's", encode_text(model, real), ref)):
            d = (a - b).abs().max().item()
            assert d <= eps, f'{what}: max |delta| {d:.3g} > {eps}'
    v = word.clone().requires_grad_()
    g = torch.autograd.grad(encode_with_pseudo_tokens(model, PROMPTS, v).square().sum(), v)[0]
    g_ref = torch.autograd.grad(encode_with_pseudo_tokens(model, PROMPTS, v,
                                                          trim=False).square().sum(), v)[0]
    assert g.abs().sum() > 0, 'no gradient reached the token'
    d, tol = (g - g_ref).abs().max().item(), eps * g_ref.abs().max().item()
    assert d <= tol, f'gradient, trimmed vs untrimmed: max |delta| {d:.3g} > {tol:.3g}'


@pytest.mark.parametrize('spec', ['ViT-B/32', 'open_clip:ViT-B-32', 'hf:ViT-B/32'])
def test_full_size_vit_b32_of_every_family(spec):
    model = build_clip(spec, seed=0).requires_grad_(False)
    assert (backbone(model).width, backbone(model).dim) == (512, 512)
    _check(model)


def test_open_clip_vit_h14_text_tower():
    "ViT-H-14's text tower alone (354M parameters; the whole model is ~4 GB in fp32)."
    import open_clip
    cfg = open_clip.get_model_config('ViT-H-14')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = open_clip.transformer.TextTransformer(
            output_dim=cfg['embed_dim'], **cfg['text_cfg']).eval().requires_grad_(False)
    bb = backbone(tower)
    assert (bb.width, bb.dim, bb.own_image, len(bb.text_blocks())) == (1024, 1024, None, 24)
    _check(tower)


def test_hf_vit_l14_preset_is_the_published_shape():
    model = build_clip('hf:ViT-L/14', seed=0)
    bb = backbone(model)
    assert (bb.width, bb.dim, bb.image_size, len(bb.blocks)) == (768, 768, 224, 12)
    n = sum(p.numel() for p in model.parameters())
    assert 427_000_000 < n < 429_000_000, f'{n:,} parameters; the published ViT-L/14 has ~428M'
