"""Every CLIP family through the commands: every stage on a tiny OpenCLIP and a tiny Hugging Face
CLIP, and searle-query / the API on tiny openai, OpenCLIP and Hugging Face CLIP files, with every
method."""
import json, os, subprocess
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1'); os.environ.setdefault('SEARLE_OFFLINE', '1')
import pytest
import torch

from conftest import clip_with_networks
from searle import world
from searle.cli import searle_concepts, searle_oti, searle_submit, searle_train_phi, searle_validate
from searle.clip import build_clip, clip_record, load_clip, save_clip
from searle.core import load_json, load_tensors
from searle.phrases import save_phrases


@pytest.fixture(scope='module')
def root(small_world):
    torch.set_num_threads(1)
    return small_world(3, 60, 8, 4, 64)


@pytest.mark.parametrize('spec', ['open_clip:tiny', 'hf:tiny'])
def test_every_stage_runs_on_a_tiny_family(spec, root, tmp_path):
    clip_file, phrases, unl = (str(tmp_path/'clip.pt'), str(tmp_path/'phrases.json'),
                               str(root/'unlabeled'))
    save_clip(build_clip(spec, seed=0), clip_file)
    rec = clip_record(load_clip(clip_file, device='cpu'))
    assert rec['clip_family'] == spec.split(':')[0]
    save_phrases({c: [f'a photo of {c}', f'a photo of {c} that is small']
                  for c in world.world_concepts()}, phrases)
    voc, quiet = str(root/'concepts.csv'), dict(no_progress=True)
    searle_concepts(str(tmp_path/'val.csv'), dataset='circo', dataset_path=str(root),
                    vocabulary=voc, clip_model=clip_file, top_k=10)
    searle_concepts(str(tmp_path/'unl.csv'), dataset='folder', dataset_path=unl, vocabulary=voc,
                    clip_model=clip_file, top_k=10)
    tok = searle_oti(str(tmp_path/'val.csv'), phrases, dataset='circo', dataset_path=str(root),
                     out=str(tmp_path/'oti'), clip_model=clip_file, steps=5, **quiet)
    unl_tok = searle_oti(str(tmp_path/'unl.csv'), phrases, dataset='folder', dataset_path=unl,
                         out=str(tmp_path/'oti_unl'), clip_model=clip_file, steps=5, **quiet)
    assert (load_tensors(tok)['config']['clip']['clip'] == clip_file
            and load_tensors(tok)['tokens'].shape[1] == 64)
    phi = searle_train_phi(str(unl_tok), str(tmp_path/'unl.csv'), phrases, dataset='folder',
                           dataset_path=unl, out=str(tmp_path/'phi'), clip_model=clip_file,
                           epochs=2, batch_size=32, save_every=1, **quiet)
    assert load_tensors(phi)['backbone'] == rec
    # no --clip-model: the run's own
    for kind, kw in (('oti', dict(tokens=str(tok))), ('phi', dict(phi_checkpoint=str(phi)))):
        m = searle_validate(dataset='circo', dataset_path=str(root),
                            out=str(tmp_path/f'val_{kind}'), eval_type=kind, **kw, **quiet)
        cfg = load_json(tmp_path/f'val_{kind}'/'config.json')
        assert (cfg['clip']['clip'], cfg['clip']['clip_fingerprint']) == (clip_file,
                                                                          rec['clip_fingerprint'])
        assert 0 <= m['map@5'] <= 100, m
    paths = searle_submit(dataset='circo', dataset_path=str(root), out=str(tmp_path/'sub'),
                          eval_type='phi', phi_checkpoint=str(phi), **quiet)
    assert paths['circo'].is_file()
    other = str(tmp_path/'other.pt'); save_clip(build_clip(spec, seed=1), other)
    with pytest.raises(ValueError, match='another CLIP backbone'):
        searle_validate(dataset='circo', dataset_path=str(root), out=str(tmp_path/'x'),
                        eval_type='phi', phi_checkpoint=str(phi), clip_model=other, **quiet)


METHODS5 = ('image-only', 'text-only', 'image+text', 'phi', 'oti')
METHODS7 = METHODS5 + ('lincir', 'pic2word')  # with SEARLE's neighbours

@pytest.fixture(scope='module')
def query_inputs(root, tmp_path_factory):
    "A gallery, the world's phrases (a file) and its vocabulary (a CSV), for OTI on any CLIP."
    d = tmp_path_factory.mktemp('query')
    save_phrases({c: [f'a photo of {c}', f'a {c} thing'] for c in world.world_concepts()},
                 d/'phrases.json')
    return root/'COCO2017_unlabeled'/'unlabeled2017', d/'phrases.json', root/'concepts.csv'

def clip_with_phi(spec:str, d) -> tuple[str, str]:
    "A tiny CLIP of `spec`'s family saved to a file, and a phi file sized and recorded for it."
    clip_file, nets = clip_with_networks(spec, d)
    return clip_file, nets['phi']

@pytest.mark.parametrize('spec', ['tiny', 'open_clip:tiny', 'hf:tiny'])
def test_query_command_and_api_on_each_family(spec, query_inputs, tmp_path, monkeypatch, capsys):
    "`searle-query` as typed (parsed from argv) and `ComposedRetriever.search`, for every method."
    from searle.api import ComposedRetriever
    from searle.cli import searle_query
    gallery, phrases, voc = query_inputs
    clip_file, nets = clip_with_networks(spec, tmp_path)
    ref = sorted(gallery.iterdir())[0]
    for m in METHODS7:
        argv = ['searle-query', str(ref), 'is red', '--gallery', str(gallery), '--clip-model',
                clip_file, '--method', m, '--phi', nets['phi'], '--lincir', nets['lincir'],
                '--pic2word', nets['pic2word'], '--phrases', str(phrases), '--vocabulary', str(voc),
                '--top-k', '3', '--cache-dir', str(tmp_path/'cache'), '--device', 'cpu', '--json',
                '--quiet']
        monkeypatch.setattr('sys.argv', argv)
        searle_query()
        rows = json.loads(capsys.readouterr().out)
        assert ([r['rank'] for r in rows] == [1, 2, 3]
                and ref.name not in [r['name'] for r in rows]), (m, rows)
    r = ComposedRetriever.from_pretrained(clip_file, **nets, phrases=phrases, vocabulary=voc,
                                          cache_dir=tmp_path/'cache', device='cpu').index(gallery)
    assert r.methods() == METHODS5[:3] + ('oti', 'phi', 'lincir', 'pic2word')
    for m in METHODS7:
        hits = r.search(ref, 'is red', k=4, method=m)
        scores = [h.score for h in hits]
        assert len(hits) == 4 and scores == sorted(scores, reverse=True), (m, hits)

def test_query_command_on_a_hugging_face_clip_file(query_inputs, tmp_path):
    "The console script itself, on the CLIP family whose attributes the API used to read directly."
    gallery, phrases, voc = query_inputs
    clip_file, phi = clip_with_phi('hf:tiny', tmp_path)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(['searle-query', str(sorted(gallery.iterdir())[0]), 'is red', '--gallery',
                        str(gallery), '--clip-model', clip_file, '--method', 'oti', '--phrases',
                        str(phrases), '--vocabulary', str(voc), '--cache-dir',
                        str(tmp_path/'cache'), '--top-k', '2', '--quiet'],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr[-2000:]
