"""One GPU check of every CLIP family in every precision, in at most ~5 minutes (random weights, no
downloads).

Per family (`--clip-model SPEC`, repeatable; default the three ViT-B/32s: openai, OpenCLIP, Hugging
Face) and per precision (fp32, amp, bf16; searle.core):
- OTI images per second: `invert_batch` on a batch of `--images` images for `--steps` steps (after a
  warm-up batch);
- the encode ratio: searle's trimmed encoding against CLIP's 77-token pass (`trim=False`), forward +
  backward to the pseudo tokens as OTI runs it, on an OTI-like batch (16 templates + 16 ~20-word
  phrases), in that precision;
- peak GPU memory of the OTI batch;
- the token max |delta| of amp and bf16 to fp32 (same draws, same steps), beside the tokens' norm
  for scale.
A spec that `build_clip` does not know is skipped with a line saying so.
Usage: python benchmarks/gpu.py [--clip-model SPEC ...] [--precision fp32 amp bf16]
                                [--images 32] [--steps 50]
       python benchmarks/gpu.py --device cpu     (a smoke test: the tiny model, a few steps, bf16
                                                 and fp32 only)
"""
import argparse, random, statistics, sys, time
import torch
from searle.core import autocast, resolve_precision
from searle.clip import build_clip, encode_text, encode_with_pseudo_tokens
from searle.oti import OTIConfig, invert_batch, phrase_pool

CONCEPTS = ['dog', 'cat', 'beach', 'car', 'tree', 'house', 'boat', 'bicycle', 'flower', 'mountain',
            'bird', 'horse']
WORDS = ('is running along the sandy shore while the sun sets behind tall palm trees and the waves '
         'roll in under a cloudy orange sky near some small houses with red roofs').split()
TEMPLATES = ['a photo of $', 'this is a photo of a $', 'we see a $ in this image',
             'a sketch of a $']

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def oti_run(model, feats, names, pools, steps, precision, dev):
    "(tokens, EMA tokens, seconds, peak bytes) of one OTI batch."
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    sync(dev); t = time.perf_counter()
    tok, ema, _ = invert_batch(model, feats, names, pools,
                               OTIConfig(steps=steps, batch_size=len(names), precision=precision))
    sync(dev); s = time.perf_counter() - t
    return tok, ema, s, (torch.cuda.max_memory_allocated(dev) if dev.type == 'cuda' else None)

def encode_ratio(model, prompts, W, precision, dev, repeats):
    "Median time of the 77-token pass over searle's trimmed one (forward + backward to the tokens)."
    v = (torch.randn(len(prompts), W,
                     generator=torch.Generator().manual_seed(0)) * 0.02).to(dev).requires_grad_()
    def run(trim):
        with autocast(precision, dev): out = encode_with_pseudo_tokens(model, prompts, v, trim=trim)
        out.float().sum().backward(); v.grad = None
    times = {}
    for trim in (False, True):
        run(trim); ts = []                       # warm-up
        for _ in range(repeats):
            sync(dev)
            t = time.perf_counter(); run(trim); sync(dev); ts.append(time.perf_counter() - t)
        times[trim] = statistics.median(ts)
    return times[False] / times[True]

def bench(spec, precisions, a, dev, rng):
    try: model = build_clip(spec, seed=0)
    except Exception as e:  # another family's spec on a branch that does not have it yet
        print(f'{spec}: skipped, build_clip does not know it ({type(e).__name__}: {e})'); return
    model = model.to(dev).eval().requires_grad_(False)
    with torch.no_grad(): D = encode_text(model, ['a photo of a dog']).shape[1]
    phrases = {c: [f'a photo of {c} that ' + ' '.join(rng.sample(WORDS, rng.randint(14, 22)))
                   for _ in range(20)] for c in CONCEPTS}
    names = [f'img{i:05d}.jpg' for i in range(a.images)]
    pools = [phrase_pool(rng.sample(CONCEPTS, 10), phrases, set(), 15) for _ in names]
    feats = torch.randn(a.images, D, generator=torch.Generator().manual_seed(0))
    prompts = [rng.choice(TEMPLATES) for _ in range(16)]
    prompts += [' '.join(['a photo of', *rng.sample(WORDS, 3), '$', *rng.sample(WORDS, 17)])
                for _ in range(16)]
    ref = None
    for p in precisions:
        try: resolve_precision(p, dev)
        except ValueError as e: print(f'{spec} {p}: skipped ({e})'); continue
        # warm-up (kernels, autotuning)
        oti_run(model, feats[:2], names[:2], pools[:2], 2, p, dev)
        tok, ema, s, peak = oti_run(model, feats, names, pools, a.steps, p, dev)
        if p == 'fp32': ref = (tok, ema)
        ratio = encode_ratio(model, prompts, tok.shape[1], p, dev, a.repeats)
        delta = '' if ref is None or p == 'fp32' else \
            (f'  token max|d| to fp32 {(tok - ref[0]).abs().max():.2e} (EMA '
             f'{(ema - ref[1]).abs().max():.2e})')
        bad = int((~torch.isfinite(tok).all(1)).sum())
        mem = f'{peak / 2**30:6.2f} GiB' if peak is not None else '   n/a  '
        print(f'{spec:22s} {p:5s} OTI {a.images / s * a.steps / 350:8.2f} img/s (350-step eq.; '
              f'{a.images / s:8.1f} img/s at '
              f'{a.steps} steps)  encode ratio {ratio:5.2f}x  peak {mem}  token norm '
              f'{tok.norm(dim=-1).mean():.2f}'
              f'{"  NON-FINITE " + str(bad) if bad else ""}{delta}', flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--clip-model', action='append', metavar='SPEC',
                    help="repeatable; default: ViT-B/32, open_clip:ViT-B-32, hf:ViT-B/32")
    ap.add_argument('--precision', nargs='+', default=['fp32', 'amp', 'bf16'],
                    choices=['fp32', 'amp', 'bf16'])
    ap.add_argument('--images', type=int, help='OTI batch (default 32; 4 on --device cpu)')
    ap.add_argument('--steps', type=int, help='OTI steps timed (default 50; 5 on --device cpu)')
    ap.add_argument('--repeats', type=int,
                    help='encode timings per mode (default 5; 1 on --device cpu)')
    ap.add_argument('--device', default='cuda',
                    help="'cuda' (default) or 'cpu' for a smoke test with tiny settings")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('benchmarks/gpu.py needs a CUDA GPU and torch sees none; run `python '
                 'benchmarks/gpu.py --device cpu` for a smoke test')
    cpu = dev.type == 'cpu'
    specs = a.clip_model or (['tiny'] if cpu else ['ViT-B/32', 'open_clip:ViT-B-32', 'hf:ViT-B/32'])
    a.images, a.steps, a.repeats = (a.images or (4 if cpu else 32), a.steps or (5 if cpu else 50),
                                    a.repeats or (1 if cpu else 5))
    name = torch.cuda.get_device_name(dev) if not cpu else f'CPU, {torch.get_num_threads()} threads'
    print(f'{name}; torch {torch.__version__}; random weights; OTI {a.images} images x '
          f'{a.steps} steps')
    t0 = time.perf_counter()
    for spec in specs: bench(spec, a.precision, a, dev, random.Random(0))
    print(f'total {time.perf_counter() - t0:.0f} s')
