"""LinCIR and Pic2Word as a user meets them: their authors' released file formats (random weights
sized for a tiny CLIP) through `searle-validate` on the real annotation files in ../shared/data
(placeholder images), under the shared protocol and under each paper's own."""
import subprocess
from collections import OrderedDict
import pytest, torch
from searle.clip import backbone, build_clip, load_clip, save_clip
from searle.core import load_json
from conftest import ENV, real_circo, real_cirr

def released_lincir(d, dim:int, width:int):
    "LinCIR's release layout: `{'Phi': OrderedDict}` (their demo's file), float32."
    g = torch.Generator().manual_seed(1)
    sd = OrderedDict((f'layers.{i}.{p}', 0.02 * torch.randn(*s, generator=g))
                     for i, (o, n) in zip((0, 3, 6), ((4 * dim, dim), (4 * dim, 4 * dim),
                                                     (width, 4 * dim)))
                     for p, s in (('weight', (o, n)), ('bias', (o,))))
    torch.save({'Phi': sd}, d/'lincir_large.pt')
    return d/'lincir_large.pt'

def released_pic2word(d, dim:int, width:int, clip_sd:dict):
    "Pic2Word's release layout: a DDP training checkpoint ('module.' keys), the CLIP beside."
    g, mid = torch.Generator().manual_seed(2), 512
    shapes = {'layers.0.0': (mid, dim), 'layers.1.0': (mid, mid), 'fc_out': (width, mid)}
    net = {f'module.{k}.{p}': 0.02 * torch.randn(*(s if p == 'weight' else s[:1]), generator=g)
           for k, s in shapes.items() for p in ('weight', 'bias')}
    torch.save({'epoch': 30, 'name': 'pic2word', 'optimizer': {'state': {}, 'param_groups': []},
                'state_dict': {f'module.{k}': v for k, v in clip_sd.items()},
                'state_dict_img2text': net}, d/'pic2word_model.pt')
    return d/'pic2word_model.pt'

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('neighbours')
    model = build_clip('tiny', seed=0); save_clip(model, d/'tiny.pt')
    bb = backbone(load_clip(d/'tiny.pt', device='cpu'))
    return {'clip': d/'tiny.pt', 'lincir': released_lincir(d, bb.dim, bb.width),
            'pic2word': released_pic2word(d, bb.dim, bb.width, model.state_dict())}

@pytest.mark.parametrize('dataset', ['circo', 'cirr'])
def test_released_formats_through_searle_validate(shared_dir, files, dataset, tmp_path):
    root = (real_circo if dataset == 'circo' else real_cirr)(shared_dir, tmp_path/'data', 'val')
    got = {}
    for net in ('lincir', 'pic2word'):
        for protocol in ('shared', 'paper'):
            out = tmp_path/f'{net}-{protocol}'
            r = subprocess.run(['searle-validate', '--dataset', dataset, '--dataset-path', root,
                                '--eval-type', net, f'--{net}-checkpoint', files[net],
                                '--clip-model', files['clip'], '--protocol', protocol, '--out', out,
                                '--cache-dir', tmp_path/'cache', '--device', 'cpu', '--no-progress',
                                '--batch-size', '128'],
                               capture_output=True, text=True, env=ENV, timeout=900)
            assert r.returncode == 0, r.stderr[-2000:]
            m, cfg = load_json(out/'metrics.json'), load_json(out/'config.json')['config']
            assert m and all(0 <= v <= 100 for v in m.values()), m
            assert cfg['method'].startswith(f'token_fn:{net}:'), cfg['method']
            got[net, protocol] = cfg
    # the shared protocol is SEARLE's for both; each paper's differs where the paper does
    assert got['lincir', 'shared']['protocol'] == got['pic2word', 'shared']['protocol'] == 'searle'
    assert got['pic2word', 'shared']['template'] == 'a photo of $ that {caption}'
    assert (got['pic2word', 'paper']['template'], got['pic2word', 'paper']['preprocess'],
            got['pic2word', 'paper']['join']) == ('a photo of $ , {caption}', 'clip',
                                                  'second-and-first'), got['pic2word', 'paper']
    assert (got['lincir', 'paper']['protocol'], got['lincir', 'paper']['preprocess']) == \
        ('lincir', 'clip'), got['lincir', 'paper']

def test_a_checkpoint_for_another_clip_is_named(files, shared_dir, tmp_path):
    "A Pic2Word file sized for another CLIP fails in one line naming the widths, before any image."
    root = real_circo(shared_dir, tmp_path/'data', 'val')
    bad = released_pic2word(tmp_path, 32, 64, {})
    r = subprocess.run(['searle-validate', '--dataset', 'circo', '--dataset-path', root,
                        '--eval-type', 'pic2word', '--pic2word-checkpoint', bad,
                        '--clip-model', files['clip'], '--out', tmp_path/'o', '--device', 'cpu'],
                       capture_output=True, text=True, env=ENV, timeout=300)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and 'Traceback' not in r.stderr and '32' in last, r.stderr[-1500:]
