"""Concept features of the Open Images vocabulary: batched (all 24 templates of many concepts per
forward, trimmed at end-of-text) against one concept at a time.

Full-size ViT-B/32 with random weights (speed does not depend on the weights' values), float32, CPU.
Three ways of building the template-ensembled features:
  batched   searle.concepts.concept_features, `--batch-size` concepts (x 24 prompts) per forward
  single    the same function called with one concept at a time (24 prompts per forward, trimmed)
  original  one concept at a time through CLIP's own encode_text on 77-token rows, as the original
            code did
`--concepts N` times the batched build on the first N concepts (default: the whole vocabulary); the
one-at-a-time ways are timed on `--sample` random concepts and extrapolated (said so in the output),
because encoding 20,931 concepts one at a time would hold the CPU for hours. Every total is also
extrapolated linearly to the full vocabulary.
Usage: python benchmarks/concepts.py [--vocabulary CSV] [--concepts N] [--sample 32]
                                     [--batch-size 64] [--threads 1]
"""
import argparse, random, time
from pathlib import Path

import clip
import torch
import torch.nn.functional as F
from searle.clip import build_clip
from searle.concepts import TEMPLATES, concept_features, concept_prompts, read_vocabulary

DEFAULT_VOCAB = (Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'openimages'
                 / 'oidv7-class-descriptions.csv')


@torch.no_grad()
def original_one(model, concept):
    "One concept as the original did: 24 prompts of 77 tokens through CLIP's encode_text."
    f = model.encode_text(clip.tokenize(concept_prompts(concept)))  # [24, D]
    return F.normalize(F.normalize(f, dim=-1).mean(0), dim=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--vocabulary', type=Path, default=DEFAULT_VOCAB)
    ap.add_argument('--concepts', type=int, default=None,
                    help='batched build on the first N concepts (default: all)')
    ap.add_argument('--sample', type=int, default=32, help='concepts timed one at a time')
    ap.add_argument('--batch-size', type=int, default=64,
                    help='concepts per forward in the batched build')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch threads (on shared cores one thread beats two)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vocab = read_vocabulary(a.vocabulary)
    V, N = len(vocab), min(a.concepts or len(vocab), len(vocab))
    model = build_clip('ViT-B/32', seed=0)
    print(f'vocabulary {a.vocabulary} ({V} concepts, {len(TEMPLATES)} templates); ViT-B/32 random '
          f'weights, {sum(p.numel() for p in model.parameters())/1e6:.1f}M params, float32, '
          f'{a.threads} threads')

    sample = random.Random(0).sample(vocab, a.sample)
    concept_features(model, sample[:2], batch_size=2, progress=False)  # warm-up
    t = time.perf_counter()
    single = torch.cat([concept_features(model, [c], batch_size=1, progress=False) for c in sample])
    t_single = (time.perf_counter() - t) / len(sample)
    t = time.perf_counter(); orig = torch.stack([original_one(model, c) for c in sample])
    t_orig = (time.perf_counter() - t) / len(sample)
    batched_sample = concept_features(model, sample, batch_size=a.batch_size, progress=False)
    delta = max((single - orig).abs().max().item(), (batched_sample - orig).abs().max().item())

    t = time.perf_counter()
    feats = concept_features(model, vocab[:N], batch_size=a.batch_size, progress=True)
    t_batched = time.perf_counter() - t
    assert feats.shape == (N, 512)
    per_b = t_batched / N

    print(f'\nbatched, {a.batch_size} concepts ({a.batch_size * len(TEMPLATES)} prompts) per '
          f'forward: {N} concepts measured in {t_batched:.1f} s = {per_b*1e3:.1f} ms/concept'
          + ('' if N == V else f' -> {per_b*V/60:.1f} min for all {V} (extrapolated from {N})'))
    print(f'single (searle, trimmed), one concept per call: {t_single*1e3:.1f} ms/concept on a '
          f'sample of {len(sample)} '
          f'-> {t_single*V/60:.1f} min for all {V} (extrapolated)')
    print(f'original (77-token rows), one concept per call: {t_orig*1e3:.1f} ms/concept on a '
          f'sample of {len(sample)} '
          f'-> {t_orig*V/60:.1f} min for all {V} (extrapolated)')
    print(f'ratio single / batched:   {t_single / per_b:.2f}x')
    print(f'ratio original / batched: {t_orig / per_b:.2f}x')
    print(f'max |delta| between the three on the sample: {delta:.2e}')


if __name__ == '__main__':
    main()
