"""OTI speed: searle's `invert_batch` against a straightforward implementation of the same math.

32 images, 20 steps, full-size ViT-B/32 with random weights (speed does not depend on the weights), realistic
GPT-like phrases. The straightforward version, written here as the reference, encodes every prompt at CLIP's full
77 tokens in three separate forwards per step (templates, pseudo phrases, and the real phrases again every step,
without gradients), with the batch-mean loss and AdamW eps 1e-8 of the original code; searle runs the batch as one
full batch of the math (math_batch_size = the number of images, so its eps is 1e-8 x that). Both use the same
per-image draws, so their tokens can be compared: what differs is float rounding of the two encoders only.
Prints the speed ratio (goal >= 3x), the max |delta| of the tokens (goal <= 1e-6 for 20 steps), and the achieved
FLOP/s of searle's OTI as a fraction of a large fp32 torch.mm on the same cores (goal >= 50 %).
Usage: python benchmarks/oti.py [--steps 20] [--images 32] [--no-flops]
"""
import argparse, random, time
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from searle.clip import build_clip, encode_with_pseudo_tokens, tokenize
from searle.concepts import TEMPLATES
from searle.oti import OTIConfig, draw, invert_batch, phrase_pool
from searle.phrases import make_pseudo_phrase

CONCEPTS = ['dog', 'cat', 'beach', 'car', 'tree', 'house', 'boat', 'bicycle', 'flower', 'mountain', 'bird', 'horse',
            'table', 'guitar', 'train', 'bridge', 'umbrella', 'kite', 'pizza', 'clock']
REST = ('is running along the sandy shore while the sun sets behind tall palm trees and the waves roll in '
        'under a cloudy orange sky near some small houses with red roofs').split()

def phrases_for(c, rng, n=20):
    return [f'a photo of {c} that ' + ' '.join(rng.sample(REST, rng.randint(14, 22))) for _ in range(n)]

def straightforward(model, feats, names, pools, cfg):
    "The same math, written directly: 77-token encodes, real phrases re-encoded every step, batch-mean loss."
    W, B = model.token_embedding.weight.shape[1], len(names)
    draws = [draw(n, len(p), W, cfg) for n, p in zip(names, pools)]
    v = torch.stack([d.init for d in draws]).requires_grad_()
    ema = v.detach().clone()
    opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay)
    img = F.normalize(feats, dim=-1)
    model.requires_grad_(False)
    for s in range(cfg.steps):
        templates = [TEMPLATES[int(d.template[s])].format(' $ ') for d in draws]
        chosen = [pool[int(d.phrase[s])] for pool, d in zip(pools, draws)]
        f_t = F.normalize(encode_with_pseudo_tokens(model, templates, v, trim=False), dim=-1)
        f_p = F.normalize(encode_with_pseudo_tokens(model, [make_pseudo_phrase(p, c) for c, p in chosen], v, trim=False), dim=-1)
        with torch.no_grad(): f_r = F.normalize(model.encode_text(tokenize([p for _, p in chosen])), dim=-1)
        loss = ((1 - (f_t * img).sum(-1)) * cfg.lambda_cos + (1 - (f_p * f_r).sum(-1)) * cfg.lambda_gpt) / (cfg.lambda_cos + cfg.lambda_gpt)
        opt.zero_grad(); loss.mean().backward(); opt.step()
        with torch.no_grad(): ema.mul_(cfg.ema_decay).add_(v.detach(), alpha=1 - cfg.ema_decay)
    return v.detach(), ema

def mm_flops_per_s(n=2048, repeats=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(repeats): torch.mm(a, b)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--steps', type=int, default=20); ap.add_argument('--images', type=int, default=32)
    ap.add_argument('--no-flops', action='store_true', help='skip the FLOP count (a third OTI run)')
    a = ap.parse_args()
    rng = random.Random(0)
    phrases = {c: phrases_for(c, rng) for c in CONCEPTS}
    names = [f'img{i:05d}.jpg' for i in range(a.images)]
    pools = [phrase_pool(rng.sample(CONCEPTS, 15), phrases, set(), 15) for _ in names]
    model = build_clip('ViT-B/32', seed=0)
    feats = torch.randn(a.images, 512, generator=torch.Generator().manual_seed(0))  # stand-in image features, seeded
    cfg = OTIConfig(steps=a.steps, batch_size=a.images, math_batch_size=a.images)  # one full batch of the original
    print(f'ViT-B/32 random weights, {a.images} images, {a.steps} steps, {torch.get_num_threads()} threads')

    t = time.perf_counter(); tok_ref, ema_ref = straightforward(model, feats, names, pools, cfg); t_ref = time.perf_counter() - t
    t = time.perf_counter(); tok, ema, _ = invert_batch(model, feats, names, pools, cfg); t_ours = time.perf_counter() - t
    print(f'straightforward: {t_ref:7.1f} s    searle: {t_ours:7.1f} s    ratio {t_ref / t_ours:.2f}x  (goal >= 3x)')
    print(f'max |delta| vs the batch-mean reference after {a.steps} steps: tokens {(tok - tok_ref).abs().max().item():.2e}, '
          f'EMA tokens {(ema - ema_ref).abs().max().item():.2e} (token norm ~{tok.norm(dim=-1).mean().item():.2f}; goal <= 1e-6)')
    if a.no_flops: raise SystemExit

    with FlopCounterMode(display=False) as fc: invert_batch(model, feats, names, pools, cfg)
    flops = fc.get_total_flops()
    peak = mm_flops_per_s()
    print(f'searle OTI: {flops / 1e12:.2f} TFLOP in {t_ours:.1f} s = {flops / t_ours / 1e9:.1f} GFLOP/s; '
          f'large fp32 torch.mm: {peak / 1e9:.1f} GFLOP/s; fraction {flops / t_ours / peak:.0%} (goal >= 50 %)')
