"""bf16 against fp32 on the CPU: how far encoding, OTI and phi training move (random weights, no
downloads).

For each model (the tiny preset and full-size ViT-B/32, random weights): the max |delta| between
fp32 and bf16
- of the L2-normalised text features of an OTI-like batch with pseudo tokens
  (`encode_with_pseudo_tokens`),
- of the tokens after a short OTI (`invert_batch`, the same draws in both precisions), with the
  token norm for scale,
- of the pseudo tokens predicted by a phi trained for a few steps (`train_phi` in memory), with
  their norm.
These are the numbers the notebooks' bf16 tests are set against (nbs/02_clip, 05_oti, 06_phi).
Usage: python benchmarks/precision.py [--models tiny ViT-B/32] [--oti-steps 20] [--images 8]
"""
import argparse, random, time
import torch
import torch.nn.functional as F
from searle.core import autocast
from searle.clip import build_clip, encode_with_pseudo_tokens
from searle.oti import OTIConfig, invert_batch, phrase_pool
from searle.phi import PhiConfig, train_phi

CONCEPTS = ['dog', 'cat', 'beach', 'car', 'tree', 'house', 'boat', 'bicycle', 'flower', 'mountain']
WORDS = ('is running along the sandy shore while the sun sets behind tall palm trees and the waves '
         'roll in').split()

def world(n_images):
    "Phrases, and a concept table row per image (seeded: the notebooks' bf16 tests build the same)."
    rng = random.Random(1)
    phrases = {c: [f'a photo of {c} that ' + ' '.join(rng.sample(WORDS, rng.randint(6, 14)))
                   for _ in range(8)] for c in CONCEPTS}
    table = {f'img{i:03d}': rng.sample(CONCEPTS, 5) for i in range(n_images)}
    return phrases, table

def encode_delta(model, n, width):
    rng = random.Random(0)
    prompts = [f'a photo of $ that ' + ' '.join(rng.sample(WORDS, rng.randint(3, 12)))
               for _ in range(n)]
    v = torch.randn(n, width, generator=torch.Generator().manual_seed(0)) * 0.02
    with torch.no_grad():
        a = F.normalize(encode_with_pseudo_tokens(model, prompts, v).float(), dim=-1)
        with autocast('bf16', 'cpu'):
            b = F.normalize(encode_with_pseudo_tokens(model, prompts, v).float(), dim=-1)
    return (a - b).abs().max().item()

def oti_delta(model, phrases, table, steps, D):
    names = list(table)
    feats = torch.randn(len(names), D, generator=torch.Generator().manual_seed(1))
    pools = [phrase_pool(table[n], phrases, set(), 15) for n in names]
    out = {}
    for p in ('fp32', 'bf16'):
        t = time.perf_counter()
        out[p] = invert_batch(model, feats, names, pools,
                              OTIConfig(steps=steps, batch_size=len(names), precision=p))
        out[p + '_s'] = time.perf_counter() - t
    (t32, e32, _), (t16, e16, _) = out['fp32'], out['bf16']
    return ((t32 - t16).abs().max().item(), (e32 - e16).abs().max().item(),
            t32.norm(dim=-1).mean().item(), out['fp32_s'], out['bf16_s'])

def phi_delta(model, phrases, table, D, W, epochs):
    names = list(table)
    g = torch.Generator().manual_seed(2)
    feats, tokens = (torch.randn(len(names), D, generator=g),
                     torch.randn(len(names), W, generator=g) * 0.3)
    preds = {}
    for p in ('fp32', 'bf16'):
        cfg = PhiConfig(epochs=epochs, batch_size=len(names) // 2, lr=1e-3, top_k=5,
                        save_every=epochs, precision=p)
        phi = train_phi(model, names, feats, tokens, table, phrases, cfg, device='cpu',
                        progress=False)
        with torch.no_grad(): preds[p] = phi(feats)
    return ((preds['fp32'] - preds['bf16']).abs().max().item(),
            preds['fp32'].norm(dim=-1).mean().item())

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', nargs='+', default=['tiny', 'ViT-B/32'])
    ap.add_argument('--oti-steps', type=int, default=20)
    ap.add_argument('--images', type=int, default=8)
    ap.add_argument('--phi-epochs', type=int, default=2)
    a = ap.parse_args()
    print(f'bf16 vs fp32 on the CPU, {torch.get_num_threads()} threads, random weights (seed 0)')
    for name in a.models:
        model = build_clip(name, seed=0)
        D, W = model.text_projection.shape[1], model.token_embedding.weight.shape[1]
        phrases, table = world(a.images)
        enc = encode_delta(model, 16, W)
        tok, ema, norm, s32, s16 = oti_delta(model, phrases, table, a.oti_steps, D)
        phi, pnorm = phi_delta(model, phrases, table, D, W, a.phi_epochs)
        print(f'{name}: encode (normalised features) max |delta| {enc:.2e}')
        print(f'{name}: OTI {a.images} images x {a.oti_steps} steps: tokens max |delta| {tok:.2e}, '
              f'EMA {ema:.2e} '
              f'(token norm ~{norm:.2f}); fp32 {s32:.1f} s, bf16 {s16:.1f} s')
        print(f'{name}: phi {a.phi_epochs} epochs x 2 steps: predictions max |delta| {phi:.2e} '
              f'(prediction norm ~{pnorm:.2f})')
