"""Golden values of LinCIR's released code, for tests/test_lincir.py.

Usage: PYTHONPATH=<transformers 4.40>:. python tests/golden/make_lincir_golden.py \
           --repo PATH_TO_navervision/lincir --out tests/golden/lincir_golden.pt

Runs the authors' own pieces on small seeded inputs: `loader.CaptionDataset` (caption cleaning,
key-word masking, tokenisation), `models.Phi`, `encode_with_pseudo_tokens_HF`,
`validate.fiq_generate_val_predictions` (FashionIQ's two captions in both orders, averaged; its
DataLoader runs with no worker processes instead of 10, the same batches), and one training
step as `train_phi.py` writes it (its loop is not a function: the noise line, the MSE loss and
AdamW are restated below in the same order of random draws). Stubbed, because they cannot run here:
the modules `webdataset`, `spacy` and `datasets` that loader.py imports but CaptionDataset does not
use; spaCy's tagger itself (CaptionDataset is handed searle's `simple_tags` in spaCy's shape, so the
masking rule is compared on the same tags); the tokenizer that `build_text_encoder` downloads
(SDXL's tokenizer_2: CLIP's BPE with '!' as padding, rebuilt from the BPE file in the `clip`
package); and the CLIP weights (a 2-layer 32-wide Hugging Face text tower whose parameters `fill`
sets from a seed, the same way the test does). Their encoder passes `causal_attention_mask`
and `return_dict` to CLIPEncoder, which newer transformers refuse: run this with transformers 4.40
(made with 4.40.2).
"""
import argparse, sys, types
import torch

# the text tower of the golden CLIP (Hugging Face CLIPTextConfig keywords)
TEXT_CONFIG = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=2, projection_dim=32, vocab_size=49408,
                   max_position_embeddings=77, eos_token_id=2)
CAPTIONS = ['An image of a red circle that is small and at the top.',
            'a photo of circle that is red, large and on the left',
            'this photo contains a cross at the bottom',
            'we see a large blue square on the right', 'running and jumping',
            'a dog with a red ball on the grass, next to a dog', 'cheap $ prices',
            'the ' + 'very long caption with many words about the sea ' * 10]
# FashionIQ queries: (reference, target, [first caption, second caption]), as their loader gives
FIQ_QUERIES = [('ref0', 'tgt0', ['is darker.', 'has long sleeves?']),
               ('ref2', 'tgt1', [' is shorter, ', 'has a red logo and stripes']),
               ('ref0', 'tgt2', ['is blue', 'is more casual.'])]
SEED = 1234

def fill(named_params, seed:int):
    "Set parameters by sorted name from one seeded stream: N(0, 0.05), norm weights 1 + N(0, 0.05)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(named_params, key=lambda x: x[0]):
            r = torch.randn(p.shape, generator=g) * 0.05
            p.copy_(1 + r if ('norm' in name and name.endswith('weight')) else r)

def _bpe_tokenizer(tmp):
    "SDXL's tokenizer_2 rebuilt offline: CLIP's BPE, '!' as padding, '[$]' added (49408)."
    import json, os, clip
    from transformers import CLIPTokenizer
    t = clip.clip._tokenizer
    with open(os.path.join(tmp, 'vocab.json'), 'w') as f: json.dump(t.encoder, f)
    with open(os.path.join(tmp, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n')
        ranked = sorted(t.bpe_ranks.items(), key=lambda x: x[1])
        f.writelines(f'{a} {b}\n' for (a, b), _ in ranked)
    tok = CLIPTokenizer(os.path.join(tmp, 'vocab.json'), os.path.join(tmp, 'merges.txt'),
                        pad_token='!', model_max_length=77)
    tok.add_special_tokens({'additional_special_tokens': ['[$]']})
    assert tok.convert_tokens_to_ids('[$]') == 49408
    return tok

class _Token:
    def __init__(self, text, pos): self.text, self.pos_ = text, pos

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repo', required=True); ap.add_argument('--out', required=True)
    a = ap.parse_args()
    import random, tempfile
    import torch.nn.functional as F
    import clip, transformers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    for m in ('webdataset', 'spacy', 'datasets'):  # after transformers, which probes for them
        sys.modules.setdefault(m, types.ModuleType(m))
    sys.path.insert(0, a.repo)
    from loader import CaptionDataset
    from models import Phi
    from encode_with_pseudo_tokens import encode_with_pseudo_tokens_HF
    import validate
    from searle.lincir import simple_tags
    assert transformers.__version__.startswith('4.'), 'run with transformers 4.40 (see above)'

    nlp = lambda caption: [_Token(w, p) for w, p in simple_tags(caption)]
    with tempfile.TemporaryDirectory() as tmp: tokenizer = _bpe_tokenizer(tmp)
    ds = CaptionDataset(CAPTIONS, tokenizer, nlp)
    random.seed(SEED)
    items = [ds[i] for i in range(len(CAPTIONS))]
    tokens, masked = torch.stack([x[0] for x in items]), torch.stack([x[1] for x in items])
    indicators = torch.tensor([x[2] for x in items])

    enc = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_CONFIG)).eval()
    fill(enc.named_parameters(), SEED)
    D, W = TEXT_CONFIG['projection_dim'], TEXT_CONFIG['hidden_size']
    phi = Phi(input_dim=D, hidden_dim=4 * D, output_dim=W, dropout=0.5)
    fill(phi.named_parameters(), SEED + 1)
    enc.requires_grad_(False)

    # inference: phi on image features, then the evaluation prompt
    feats = torch.randn(3, D, generator=torch.Generator().manual_seed(SEED + 2))
    phi.eval()
    with torch.no_grad():
        eval_tokens = phi(feats)
        prompts = [f'a photo of $ that {c}' for c in ('is red', 'has two dogs', 'is on the left')]
        eval_features = encode_with_pseudo_tokens_HF(enc, clip.tokenize(prompts, context_length=77),
                                                     eval_tokens)
        fiq = [dict(reference_name=r, target_name=t, relative_captions=c)
               for r, t, c in FIQ_QUERIES]
        validate.DataLoader = lambda dataset, **kw: torch.utils.data.DataLoader(
            dataset, **{**kw, 'num_workers': 0})
        fiq_features, _ = validate.fiq_generate_val_predictions(
            enc, fiq, ['ref0', 'ref1', 'ref2'], eval_tokens)

    # one training step, as train_phi.py's loop (fp32, one process)
    phi.train()
    opt = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    torch.manual_seed(SEED + 3)
    target = enc(input_ids=tokens).text_embeds
    x = target.clone()
    x += 1.0 * torch.rand(x.shape[0]).unsqueeze(-1) * torch.randn(x.shape)
    pred = encode_with_pseudo_tokens_HF(enc, masked, phi(x))
    loss = F.mse_loss(pred.float(), target.float(), reduction='mean')
    loss.backward()
    opt.step()
    named = dict(phi.named_parameters())
    gold = {'captions': CAPTIONS, 'seed': SEED, 'text_config': TEXT_CONFIG, 'tokens': tokens,
            'masked': masked, 'indicators': indicators,
            'masked_text': [tokenizer.decode(m[m > 0][1:-1]) for m in masked],
            'param_names': [n for n, _ in sorted(enc.named_parameters())],
            'feats': feats, 'eval_prompts': prompts, 'eval_tokens': eval_tokens,
            'eval_features': eval_features, 'fiq_queries': [list(q) for q in FIQ_QUERIES],
            'fiq_ref_names': ['ref0', 'ref1', 'ref2'], 'fiq_features': fiq_features,
            'step_target': target.detach(),
            'step_loss': loss.detach(),
            'step_grads': {n: p.grad.clone() for n, p in named.items()},
            'step_weights_last': {n: p.detach().clone() for n, p in named.items()
                                  if n.startswith('layers.6')},
            'transformers': transformers.__version__}
    torch.save(gold, a.out)
    print(f'wrote {a.out}: loss {loss.item():.6f}, masked captions:', *gold['masked_text'],
          sep='\n  ')

if __name__ == '__main__':
    main()
