"""LinCIR training-step speed: searle's `lincir_step` against a straightforward version of the
authors' loop.

Full-size ViT-B/32 with random weights (speed does not depend on the weights' values), captions of
8-20 words as in the authors' caption sets. The straightforward version, written here as the
reference, is the loop of their train_phi.py: the captions' features from CLIP's own 77-token text
pass, the noise (scale U(0,1) per caption, times N(0, I)), phi, then the masked captions at 77
tokens with the embedding of every `$` replaced, and the MSE; searle runs the same math with its
trimmed text passes (positions past the end of text skipped, shared prefixes computed once). Both
start from the same phi and draw the same noise and dropout, so they can be compared after the
steps: what differs is float rounding of the two encoders only.
Prints the speed ratio, the max |delta| of the losses, gradients and weights, and (--world) how
long `train_lincir` takes on the offline world's captions with the world CLIP.
Usage: python benchmarks/lincir.py [--steps 5] [--batch 32] [--world]
"""
import argparse, random, time
import torch
import torch.nn.functional as F
from searle.clip import build_clip, pseudo_token_id
from searle.lincir import LinCIRConfig, lincir_step, new_lincir, training_tokens

NOUNS = 'dog cat man woman car tree house beach boat street table flower bird horse city'.split()
ADJS = 'red small old wooden white large green sunny busy tall'.split()
OTHER = 'is sitting on the near with and in front of a running along at night'.split()

def captions(n, rng):
    "Captions of 8-20 words: key words among the rest, as web captions have them."
    word = lambda: rng.choice((rng.choice(NOUNS), rng.choice(ADJS), rng.choice(OTHER),
                               rng.choice(OTHER)))
    return [' '.join(word() for _ in range(rng.randint(8, 20))) for _ in range(n)]

def masked_features(model, tokens, pt):
    "The authors' encoder: every `$` replaced, CLIP's 77-token pass, the end of text projected."
    x = model.token_embedding(tokens)                                           # [B, 77, W]
    x = torch.where((tokens == pseudo_token_id())[..., None], pt[:, None].to(x.dtype), x)
    x = (x + model.positional_embedding).permute(1, 0, 2)                       # [77, B, W]
    x = model.ln_final(model.transformer(x).permute(1, 0, 2))                   # [B, 77, W]
    return x[torch.arange(len(tokens)), tokens.argmax(-1)] @ model.text_projection

def straightforward(phi, model, batches, lr):
    opt = torch.optim.AdamW(phi.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for tok, masked in batches:
        with torch.no_grad(): target = model.encode_text(tok)
        x = target.clone()
        x += torch.rand(x.shape[0]).unsqueeze(-1) * torch.randn(x.shape)
        loss = F.mse_loss(masked_features(model, masked, phi(x)), target)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    return losses

def searle_steps(phi, model, batches, lr):
    opt = torch.optim.AdamW(phi.parameters(), lr=lr, weight_decay=0.01)
    return [lincir_step(phi, model, opt, tok, masked, LinCIRConfig()) for tok, masked in batches]

def world_timing():
    from searle.lincir import train_lincir
    from searle.world import all_attrs, caption, load_world_clip
    rng = random.Random(0)
    caps = [caption(a, rng, 0.25)[0] for a in all_attrs() for _ in range(4)]
    model, cfg = load_world_clip('cpu'), LinCIRConfig(steps=300, batch_size=64, lr=1e-3)
    t = time.perf_counter(); net = train_lincir(model, caps, cfg); dt = time.perf_counter() - t
    print(f'world: {len(caps)} captions, {cfg.steps} steps of {cfg.batch_size}: {dt:.1f} s '
          f'({torch.get_num_threads()} threads); '
          f'loss {net.searle_log[0]:.3f} -> {net.searle_log[-1]:.3f}')

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument('--world', action='store_true', help="also time train_lincir on the world")
    a = ap.parse_args()
    rng = random.Random(0)
    batches = [training_tokens(captions(a.batch, rng), rng) for _ in range(a.steps)]
    model = build_clip('ViT-B/32', seed=0).requires_grad_(False)
    phi_ref, phi = new_lincir(model, LinCIRConfig()), new_lincir(model, LinCIRConfig())
    print(f'ViT-B/32 random weights, batches of {a.batch}, {a.steps} steps, '
          f'{torch.get_num_threads()} threads')
    torch.manual_seed(0); t = time.perf_counter()
    l_ref = straightforward(phi_ref.train(), model, batches, 1e-4)
    t_ref = time.perf_counter() - t
    torch.manual_seed(0); t = time.perf_counter()
    l_ours = searle_steps(phi.train(), model, batches, 1e-4); t_ours = time.perf_counter() - t
    pairs = list(zip(phi.parameters(), phi_ref.parameters()))
    dw = max((p - q).abs().max().item() for p, q in pairs)
    dg = max((p.grad - q.grad).abs().max().item() for p, q in pairs)
    g = max(q.grad.abs().max().item() for q in phi_ref.parameters())
    dl = max(abs(x - y) for x, y in zip(l_ours, l_ref))
    print(f'straightforward: {t_ref:6.1f} s    searle: {t_ours:6.1f} s    '
          f'ratio {t_ref / t_ours:.2f}x')
    print(f'max |delta| after {a.steps} steps: losses {dl:.2e} (loss ~{l_ref[-1]:.3f}), '
          f'last gradients {dg:.2e} (max |g| {g:.2e}), weights {dw:.2e} '
          f'(AdamW moves each weight by about lr = 1e-4 a step, whatever |g|)')
    if a.world: world_timing()
