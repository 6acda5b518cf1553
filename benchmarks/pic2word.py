"""Pic2Word training speed: searle's `pic2word_step` against the authors' loop, written directly.

Full-size CLIP with random weights (speed does not depend on the weights' values), random stand-in
image features (both train on features: the image encoder runs without gradients in either), the
same initial network and the same dropout masks (seeded per step). The reference, written here with
the authors' math, builds every prompt at CLIP's full 77 tokens: the tokens of 'a photo of' with the
mapped token inserted before the end-of-text, the whole text transformer, the feature read one
position later, logits computed twice (image→text and text→image). As in the authors' code, CLIP's
parameters keep requires_grad (they are never frozen there, only left out of the optimiser), so the
reference's backward also computes CLIP's weight gradients; `--frozen-reference` times it with CLIP
frozen. searle encodes 'a photo of $' through its trimmed encoder (the shared prefix once, positions
past the end-of-text never) with CLIP frozen. Prints the speed ratio and the max |delta| of the
network's weights after the steps.

Usage: python benchmarks/pic2word.py [--clip ViT-B/32] [--batch 32] [--steps 3] [--frozen-reference]
"""
import argparse, time

import torch
import torch.nn.functional as F

from searle.clip import build_clip, tokenize
from searle.pic2word import (Pic2Word, Pic2WordConfig, clip_logit_scale, pic2word_lr,
                             pic2word_optimizer, pic2word_step)


def reference_step(net, model, feats, opt, lr, prefix):
    "One step of the authors' loop, written directly: 77-token prompts, logits both ways."
    for g in opt.param_groups: g['lr'] = lr
    opt.zero_grad()
    B = feats.shape[0]
    tokens = net(feats)                                                        # [B, W]
    text = prefix.repeat(B, 1)                                                 # [B, 77]
    end = (text == text.max()).nonzero()[:, 1]                                 # end-of-text
    x = model.token_embedding(text)
    x = torch.cat([x[:, :end[0]], tokens.view(B, 1, -1), x[:, end[0]:-1]], dim=1)
    x = x + model.positional_embedding
    x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = model.ln_final(x)
    t = x[torch.arange(B), end + 1] @ model.text_projection                    # [B, D]
    i, t = feats / feats.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    scale, y = model.logit_scale.exp(), torch.arange(B)
    loss = (F.cross_entropy(scale * i @ t.t(), y) + F.cross_entropy(scale * t @ i.t(), y)) / 2
    loss.backward()
    opt.step()
    return loss.item()


def run(step_fn, model, feats, init, cfg, steps):
    net = Pic2Word(feats.shape[1], cfg.middle_dim, model.token_embedding.weight.shape[1]).train()
    net.load_state_dict(init)
    opt = pic2word_optimizer(net, cfg)
    t = time.perf_counter()
    losses = []
    for s in range(steps):
        torch.manual_seed(100 + s)  # the step's dropout masks, the same in both
        losses.append(step_fn(net, opt, pic2word_lr(s, 10 * steps, cfg)))
    return time.perf_counter() - t, losses, net.state_dict()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--clip', default='ViT-B/32')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--frozen-reference', action='store_true',
                    help="freeze CLIP in the reference too (the authors' code does not)")
    a = ap.parse_args()
    model = build_clip(a.clip, seed=0)
    D, W = model.text_projection.shape[1], model.token_embedding.weight.shape[1]
    feats = torch.randn(a.batch, D, generator=torch.Generator().manual_seed(0)) * 0.5
    cfg = Pic2WordConfig(warmup=2)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in Pic2Word(D, cfg.middle_dim, W).state_dict().items()}
    prefix, scale = tokenize('a photo of'), clip_logit_scale(model)
    print(f'{a.clip} random weights, batch {a.batch}, {a.steps} steps, '
          f'{torch.get_num_threads()} threads')
    model.requires_grad_(not a.frozen_reference)
    t_ref, l_ref, w_ref = run(lambda n, o, lr: reference_step(n, model, feats, o, lr, prefix),
                              model, feats, init, cfg, a.steps)
    model.requires_grad_(True)  # as a caller hands it over; pic2word_step freezes it itself
    t_ours, l_ours, w_ours = run(lambda n, o, lr: pic2word_step(n, model, feats, o, scale, lr),
                                 model, feats, init, cfg, a.steps)
    which = 'CLIP frozen' if a.frozen_reference else "CLIP requiring grad, as the authors' code"
    print(f'reference ({which}): {t_ref:6.2f} s    searle: {t_ours:6.2f} s    '
          f'ratio {t_ref / t_ours:.1f}x')
    dw = max((w_ours[k] - w_ref[k]).abs().max().item() for k in w_ref)
    dl = max(abs(x - y) for x, y in zip(l_ours, l_ref))
    print(f'max |delta| after {a.steps} steps: weights {dw:.2e}, losses {dl:.2e} '
          f'(losses {[round(x, 4) for x in l_ours]})')
