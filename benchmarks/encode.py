"""Pseudo-token text encoding: searle's encoder against CLIP's plain 77-token pass.

searle runs each prompt only up to its end-of-text, computes the positions before `$` once per
distinct beginning (a prefix tree over the tokens), and runs the last block only at the end-of-text
(nbs/02_clip.ipynb). A full-size model of any family with random weights (speed does not depend on
the weights' values), batch 32, OTI-like prompts: half templates with ` $ `, half GPT-like phrases
of ~20 words with ` $ `. Times forward + backward to the pseudo tokens with CLIP frozen (what OTI
does every step) and forward alone. The plain pass is the family's own 77-token text encoder
(openai's and OpenCLIP's `encode_text`, Hugging Face's
`text_projection(text_model(...).pooler_output)`), with `$` replaced by a forward hook on its token
embedding.
Usage: python benchmarks/encode.py [--clip-model ViT-B/32 | open_clip:ViT-B-32 | hf:ViT-B/32]
       [--repeats 3] [--threads N] [--oti-only]
"""
import argparse, random, statistics, time
import torch
from searle.clip import (_text_plan, backbone, build_clip, encode_with_pseudo_tokens,
                         pseudo_token_id, tokenize)

TEMPLATES = ['a photo of $', 'this is a photo of a $', 'we see a $ in this image',
             'a sketch of a $', '$ illustration', 'this illustration contains a $',
             'a diagram of a $', 'we see a $ photo']
WORDS = ('the dog is running on a sandy beach near the water while the sun sets behind some tall '
         'trees and a small boat floats far away under a cloudy orange sky with birds').split()

def phrases(n, n_words, rng):
    out = []
    for _ in range(n):
        w = rng.sample(WORDS, n_words)
        w.insert(rng.randrange(1, 4), '$')
        out.append('a photo of ' + ' '.join(w))
    return out

def timed(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def compare(model, prompts, repeats, label):
    tokens = tokenize(prompts)
    # seeded tokens
    v = (torch.randn(len(prompts), backbone(model).width,
                     generator=torch.Generator().manual_seed(0)) * 0.02).requires_grad_()
    def run(trim, backward):
        def f():
            with torch.set_grad_enabled(backward):
                out = encode_with_pseudo_tokens(model, tokens, v, trim=trim)
                if backward: out.sum().backward(); v.grad = None
            return out
        return f
    with torch.no_grad():
        delta = (encode_with_pseudo_tokens(model, tokens, v, trim=True)
                 - encode_with_pseudo_tokens(model, tokens, v, trim=False)).abs().max().item()
    eot = tokens.argmax(-1) + 1
    plan = _text_plan(tokens, shared=(tokens == pseudo_token_id()).int().argmax(1).tolist(),
                      eot=backbone(model).eot(tokens).tolist())
    print(f'\n{label}: {len(prompts)} prompts, end-of-text positions '
          f'{int(eot.min())}..{int(eot.max())} of 77')
    print(f'  positions run: plain {tokens.numel()}; searle {len(plan.token)} ({plan.S} shared '
          f'before `$`, {len(plan.token) - plan.S} per prompt); the last block runs only the '
          f'{len(prompts)} end-of-text positions')
    for backward in (True, False):
        full, ours = timed(run(False, backward), repeats), timed(run(True, backward), repeats)
        print(f"  {'forward+backward' if backward else 'forward         '}: family's 77-token "
              f"{full*1e3:8.1f} ms   searle {ours*1e3:8.1f} ms   ratio {full/ours:5.2f}x")
    print(f'  max |delta| between the two: {delta:.2e}')
    return delta

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--oti-only', action='store_true',
                    help='time only the OTI-like batch (the goal), not the 35-token phrases')
    ap.add_argument('--clip-model', default='ViT-B/32',
                    help="a build_clip spec: 'ViT-B/32', 'open_clip:ViT-B-32', 'hf:ViT-B/32', ...")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    rng = random.Random(0)
    model = build_clip(a.clip_model, seed=0).requires_grad_(False)  # OTI optimises the tokens only
    print(f'{a.clip_model} ({backbone(model).family}), random weights, '
          f'{sum(p.numel() for p in model.parameters())/1e6:.1f}M parameters, '
          f'{torch.get_num_threads()} threads')
    mixed = [rng.choice(TEMPLATES) for _ in range(16)] + phrases(16, 20, rng)
    d1 = compare(model, mixed, a.repeats, 'OTI-like batch (16 templates + 16 ~20-word phrases)')
    d2 = 0.0 if a.oti_only else compare(model, phrases(32, 30, rng), a.repeats,
                                        '35-token phrases alone')
    print('\ngoal: >= 4x on the OTI-like batch at max |delta| <= 1e-5 (max |delta| seen: '
          f'{max(d1, d2):.2e})')
