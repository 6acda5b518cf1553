"""Golden values from Pic2Word's released code, for tests/test_pic2word.py.

Runs the authors' own modules and functions (google-research/composed_image_retrieval) on small
seeded inputs, on the CPU in float32, and saves inputs and outputs:
- `model.model.CLIP` (their modified CLIP) built tiny after `torch.manual_seed(0)`;
- `model.model.IM2TEXT` (the mapping network), its forward pass in eval mode;
- `model.model.CLIP.encode_text_img_retrieval` on their CIRR and FashionIQ prompts
  ('a photo of * , {}' and 'a photo of * , {} and {}' as `src/data.py` writes them);
- `src/trainer.get_text_features` and `src/trainer.get_loss_img2text` (the training loss);
- two AdamW steps with the parameter groups of `src/main.py` and `cosine_lr` of their
  `third_party/open_clip/scheduler.py`.
Stubbed, because they cannot run here: `wandb` (not installed; `src/trainer.py` imports it and
nothing here calls it) and `torch.Tensor.cuda` (no GPU: the identity while their functions run,
so `get_text_features`' `text.cuda(args.gpu)` stays on the CPU). Rebuilt here because it lives
inside `main_worker`: the two AdamW groups of `src/main.py` (names holding 'bn', 'ln', 'bias' or
'logit_scale' without weight decay). Their training runs under amp on GPUs; here float32.

Usage: python tests/golden/make_pic2word_golden.py --repo PATH_TO_THEIR_CHECKOUT \
           --out tests/golden/pic2word_golden.pt
"""
import argparse, sys, types
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn

TINY = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
            vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=64,
            transformer_heads=2, transformer_layers=2)
NET = dict(embed_dim=64, middle_dim=32, output_dim=64, n_layer=2, dropout=0.1)
CIRR_CAPTIONS = ['is a dog on a beach', 'has two cats instead of one and they sleep',
                 'shows the same car in red']
FIQ_CAPTIONS = [['is longer and blue', 'has no sleeves'], ['is a darker shirt', 'has a logo']]
OPT = dict(lr=1e-4, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6, warmup=10, total=100)


def load_theirs(repo: Path):
    "Their modules, imported from the checkout with `wandb` stubbed."
    sys.path[:0] = [str(repo), str(repo / 'src')]
    sys.modules.setdefault('wandb', types.ModuleType('wandb'))
    import trainer
    from model.model import CLIP, IM2TEXT
    from third_party.open_clip.clip import tokenize
    from third_party.open_clip.scheduler import cosine_lr
    return trainer, CLIP, IM2TEXT, tokenize, cosine_lr


def main(repo: Path, out: Path):
    trainer, CLIP, IM2TEXT, tokenize, cosine_lr = load_theirs(repo)
    torch.Tensor.cuda = lambda self, *a, **k: self    # no GPU here: their .cuda() calls stay put
    torch.manual_seed(0)
    clip = CLIP(**TINY).float().eval()
    torch.manual_seed(1)
    net = IM2TEXT(**NET)
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.manual_seed(2)
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        feats = clip.encode_image(images)                               # [8, 64] unnormalised
        net.eval()
        tokens = net(feats)                                             # [8, 64]
        train_text = trainer.get_text_features(clip, tokens, Namespace(gpu=None))
        star = tokenize(['*'])[0][1]
        cirr = torch.cat([tokenize('a photo of * , {}'.format(c)) for c in CIRR_CAPTIONS])
        cirr_feats = clip.encode_text_img_retrieval(cirr, tokens[:3], split_ind=star,
                                                    repeat=False)
        fiq = torch.cat([tokenize('a photo of * , {} and {}'.format(c[1], c[0]))
                         for c in FIQ_CAPTIONS])
        fiq_feats = clip.encode_text_img_retrieval(fiq, tokens[3:5], split_ind=star,
                                                   repeat=False)
    # training: their loss, their optimiser groups and schedule
    net.train()
    named = list(net.named_parameters())
    exclude = lambda n: 'bn' in n or 'ln' in n or 'bias' in n or 'logit_scale' in n
    opt = torch.optim.AdamW([{'params': [p for n, p in named if exclude(n)], 'weight_decay': 0.},
                             {'params': [p for n, p in named if not exclude(n)],
                              'weight_decay': OPT['weight_decay']}],
                            lr=OPT['lr'], betas=OPT['betas'], eps=OPT['eps'])
    sched = cosine_lr(opt, OPT['lr'], OPT['warmup'], OPT['total'])
    args = Namespace(gpu=None, distributed=False, aggregate=True)
    losses, lrs, grads = [], [], None
    for step, seed in enumerate((3, 4)):
        lrs.append(float(sched(step)))
        opt.zero_grad()
        torch.manual_seed(seed)  # the dropout masks of this step
        loss = trainer.get_loss_img2text(clip, net, images, nn.CrossEntropyLoss(),
                                         nn.CrossEntropyLoss(), args)
        loss.backward()
        if grads is None: grads = {n: p.grad.detach().clone() for n, p in named}
        opt.step()
        losses.append(loss.item())
    g = {'clip_config': TINY, 'net_config': NET, 'opt': {**OPT, 'betas': list(OPT['betas'])},
         'clip_token_embedding_sum': clip.token_embedding.weight.sum().item(),
         'clip_param_sum': sum(p.double().sum().item() for p in clip.parameters()),
         'logit_scale': clip.logit_scale.exp().item(),
         'images_seed': 2, 'images_shape': list(images.shape), 'image_features': feats,
         'init': init, 'tokens_eval': tokens, 'train_text_features': train_text,
         'cirr_captions': CIRR_CAPTIONS, 'cirr_features': cirr_feats,
         'fashioniq_captions': FIQ_CAPTIONS, 'fashioniq_features': fiq_feats,
         'step_seeds': [3, 4], 'step_lrs': lrs, 'step_losses': losses, 'step0_grads': grads,
         'after_two_steps': {k: v.detach().clone() for k, v in net.state_dict().items()},
         'torch': str(torch.__version__)}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(g, out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.0f} KiB): losses {losses}, lrs {lrs}')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repo', type=Path, required=True, help="their checkout's root")
    ap.add_argument('--out', type=Path, default=Path('tests/golden/pic2word_golden.pt'))
    a = ap.parse_args()
    main(a.repo.resolve(), a.out)
