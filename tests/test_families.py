"Every stage on a tiny OpenCLIP and a tiny Hugging Face CLIP: concepts, OTI, phi, validation and submission through the commands."
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1'); os.environ.setdefault('SEARLE_OFFLINE', '1')
import pytest
import torch

from searle import world
from searle.cli import searle_concepts, searle_oti, searle_submit, searle_train_phi, searle_validate
from searle.clip import build_clip, clip_record, load_clip, save_clip
from searle.core import load_json, load_tensors
from searle.phrases import save_phrases


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return world.build_world(tmp_path_factory.mktemp('world'), seed=3, n_gallery=60, n_queries=8, n_test=4, n_unlabeled=64, progress=False)


@pytest.mark.parametrize('spec', ['open_clip:tiny', 'hf:tiny'])
def test_every_stage_runs_on_a_tiny_family(spec, root, tmp_path):
    clip_file, phrases, unl = str(tmp_path/'clip.pt'), str(tmp_path/'phrases.json'), str(root/'unlabeled')
    save_clip(build_clip(spec, seed=0), clip_file)
    rec = clip_record(load_clip(clip_file, device='cpu'))
    assert rec['clip_family'] == spec.split(':')[0]
    save_phrases({c: [f'a photo of {c}', f'a photo of {c} that is small'] for c in world.world_concepts()}, phrases)
    voc, quiet = str(root/'concepts.csv'), dict(no_progress=True)
    searle_concepts(str(tmp_path/'val.csv'), dataset='circo', dataset_path=str(root), vocabulary=voc, clip_model=clip_file, top_k=10)
    searle_concepts(str(tmp_path/'unl.csv'), dataset='folder', dataset_path=unl, vocabulary=voc, clip_model=clip_file, top_k=10)
    tok = searle_oti(str(tmp_path/'val.csv'), phrases, dataset='circo', dataset_path=str(root), out=str(tmp_path/'oti'),
                     clip_model=clip_file, steps=5, **quiet)
    unl_tok = searle_oti(str(tmp_path/'unl.csv'), phrases, dataset='folder', dataset_path=unl, out=str(tmp_path/'oti_unl'),
                         clip_model=clip_file, steps=5, **quiet)
    assert load_tensors(tok)['config']['clip']['clip'] == clip_file and load_tensors(tok)['tokens'].shape[1] == 64
    phi = searle_train_phi(str(unl_tok), str(tmp_path/'unl.csv'), phrases, dataset='folder', dataset_path=unl,
                           out=str(tmp_path/'phi'), clip_model=clip_file, epochs=2, batch_size=32, save_every=1, **quiet)
    assert load_tensors(phi)['backbone'] == rec
    for kind, kw in (('oti', dict(tokens=str(tok))), ('phi', dict(phi_checkpoint=str(phi)))):  # no --clip-model: the run's own
        m = searle_validate(dataset='circo', dataset_path=str(root), out=str(tmp_path/f'val_{kind}'), eval_type=kind, **kw, **quiet)
        cfg = load_json(tmp_path/f'val_{kind}'/'config.json')
        assert (cfg['clip']['clip'], cfg['clip']['clip_fingerprint']) == (clip_file, rec['clip_fingerprint'])
        assert 0 <= m['map@5'] <= 100
    paths = searle_submit(dataset='circo', dataset_path=str(root), out=str(tmp_path/'sub'), eval_type='phi', phi_checkpoint=str(phi), **quiet)
    assert paths['circo'].is_file()
    other = str(tmp_path/'other.pt'); save_clip(build_clip(spec, seed=1), other)
    with pytest.raises(ValueError, match='another CLIP backbone'):
        searle_validate(dataset='circo', dataset_path=str(root), out=str(tmp_path/'x'), eval_type='phi', phi_checkpoint=str(phi),
                        clip_model=other, **quiet)
