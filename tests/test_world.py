"""The offline world: determinism, CIRCO layout, ground truths, and the shipped tiny CLIP and
GPT-Neo. (11_world tests that the shipped files are small.)"""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from searle.core import load_json
from searle.clip import encode_text, encode_with_pseudo_tokens, load_clip, make_preprocess, tokenize
from searle.world import (ASPECTS, ASPECT_VALUES, Attrs, build_world, full_caption,
                          images_to_tensor, relative_caption, world_clip_path, world_concepts,
                          world_gpt_path, world_token_ids)

SMALL = dict(n_gallery=120, n_queries=16, n_test=4, n_unlabeled=5)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    torch.set_num_threads(1)
    return build_world(tmp_path_factory.mktemp('w')/'world', seed=0, progress=False, **SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob('*'))
            if p.is_file()}


def _attrs(meta, i):
    return Attrs(**{k: meta['images'][str(i)][k] for k in ASPECTS})


def test_world_is_deterministic_from_its_seed(world, tmp_path):
    again = build_world(tmp_path/'again', seed=0, progress=False, **SMALL)
    other = build_world(tmp_path/'other', seed=1, progress=False, **SMALL)
    assert _files(world) == _files(again)
    a, b = _files(world), _files(other)
    assert a.keys() == b.keys() and a != b
    assert (a['COCO2017_unlabeled/unlabeled2017/000000000001.png']
            != b['COCO2017_unlabeled/unlabeled2017/000000000001.png'])


def test_layout_is_circo(world):
    info = load_json(world/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json')
    val, test = (load_json(world/'annotations'/'val.json'),
                 load_json(world/'annotations'/'test.json'))
    assert len(val) == SMALL['n_queries'] and len(test) == SMALL['n_test']
    assert set(val[0]) == {'id', 'reference_img_id', 'target_img_id', 'relative_caption',
                           'shared_concept', 'gt_img_ids', 'semantic_aspects'}
    assert set(test[0]) == {'id', 'reference_img_id', 'relative_caption', 'shared_concept'}
    assert all(isinstance(q['reference_img_id'], int) and isinstance(q['target_img_id'], int)
               for q in val)
    assert [q['id'] for q in val] == list(range(len(val)))
    assert all(set(im) >= {'id', 'file_name'} for im in info['images'])
    assert len(info['images']) == SMALL['n_gallery'] + SMALL['n_queries'] + SMALL['n_test']
    for im in info['images']:  # every listed image exists and is a 64x64 RGB picture
        with Image.open(world/'COCO2017_unlabeled'/'unlabeled2017'/im['file_name']) as img:
            assert img.size == (64, 64) and img.mode == 'RGB'
    assert len(list((world/'unlabeled').glob('*.png'))) == SMALL['n_unlabeled']
    lines = (world/'concepts.csv').read_text().splitlines()
    assert (lines[0] == 'LabelName,DisplayName'
            and [l.split(',')[1] for l in lines[1:]] == world_concepts())


def test_circo_loader_reads_the_world(world):
    data = pytest.importorskip('searle.data')
    ds = data.load_dataset('circo', world, split='val')
    assert len(ds) == SMALL['n_queries']
    q = ds.queries()[0]
    ann = load_json(world/'annotations'/'val.json')[0]
    assert (q.reference, q.target, q.captions) == (str(ann['reference_img_id']),
                                                   str(ann['target_img_id']),
                                                   [ann['relative_caption']])
    assert ds.image_path(q.reference).is_file()


def test_every_annotation_refers_to_existing_images_and_references_stay_out_of_the_gallery(world):
    info = load_json(world/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json')
    gallery = {im['id'] for im in info['images'] if im['in_gallery']}
    listed = {im['id'] for im in info['images']}
    assert len(gallery) == SMALL['n_gallery']
    for split in ('val', 'test'):
        for q in load_json(world/'annotations'/f'{split}.json'):
            assert q['reference_img_id'] in listed and q['reference_img_id'] not in gallery
            assert set(q.get('gt_img_ids', [])) <= gallery
    refs = [q['reference_img_id'] for q in load_json(world/'annotations'/'val.json')]
    assert len(set(refs)) == len(refs)


def test_ground_truths_are_every_gallery_image_with_the_changed_attributes(world):
    info = load_json(world/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json')
    meta = load_json(world/'world.json')
    gallery = [im['id'] for im in info['images'] if im['in_gallery']]
    aspects = []
    for q in load_json(world/'annotations'/'val.json'):
        (aspect,) = q['semantic_aspects']; aspects.append(aspect)
        new = next(v for v in ASPECT_VALUES[aspect]
                   if relative_caption(aspect, v) == q['relative_caption'])
        ref = _attrs(meta, q['reference_img_id'])
        assert getattr(ref, aspect) != new
        want = ref.replace(aspect, new)
        assert q['gt_img_ids'][0] == q['target_img_id']
        assert set(q['gt_img_ids']) == {i for i in gallery if _attrs(meta, i) == want}
    assert set(aspects) == set(ASPECTS)
    answers = meta['test_answers']
    assert (len(answers) == SMALL['n_test']
            and all(a['gt_img_ids'][0] == a['target_img_id'] for a in answers.values()))


@pytest.fixture(scope='module')
def world_clip():
    return load_clip(world_clip_path(), device='cpu')


def test_shipped_clip_retrieves_full_captions(world, world_clip):
    info = load_json(world/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json')
    meta = load_json(world/'world.json')
    gal = [im for im in info['images'] if im['in_gallery']]
    attrs = [_attrs(meta, im['id']) for im in gal]
    pre = make_preprocess('targetpad', 64)
    with torch.no_grad():
        imgs = torch.stack([pre(Image.open(world/'COCO2017_unlabeled'/'unlabeled2017'
                                           /im['file_name'])) for im in gal])
        g = F.normalize(world_clip.encode_image(imgs), dim=-1)
        queries = list(dict.fromkeys(attrs))
        t = F.normalize(encode_text(world_clip, [full_caption(a) for a in queries]), dim=-1)
    top1 = (t @ g.T).argmax(1).tolist()
    r1 = np.mean([attrs[j] == a for j, a in zip(top1, queries)])
    assert r1 >= 0.9, r1
    # a caption that names one attribute retrieves images that have it
    with torch.no_grad():
        blue = F.normalize(encode_text(world_clip, ['a photo of a blue shape']), dim=-1)
    top10 = (blue @ g.T)[0].topk(10).indices.tolist()
    n_blue = sum(attrs[j].color == 'blue' for j in top10)
    assert n_blue >= 8, f'{n_blue} of the 10 images nearest to a blue shape are blue (< 8)'


def test_shipped_clip_keeps_the_pseudo_word_and_world_rows(world_clip):
    ids = world_token_ids()
    emb = world_clip.token_embedding.weight
    assert emb[ids].abs().sum(1).gt(0).all()
    other = torch.ones(emb.shape[0], dtype=torch.bool); other[ids] = False
    assert emb[other].abs().sum() == 0
    f = encode_with_pseudo_tokens(world_clip, ['a photo of $ that is blue'],
                                  emb[tokenize('circle')[0, 1]])
    g = encode_text(world_clip, ['a photo of circle that is blue'])
    assert torch.allclose(f, g, atol=1e-5)


def test_shipped_gpt_generates_through_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = world_gpt_path()
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    tok.pad_token, tok.padding_side = tok.eos_token, 'left'
    enc = tok(['a photo of blue star that', 'a photo of circle that'], return_tensors='pt',
              padding=True)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, max_length=35, num_return_sequences=4,
                         temperature=0.5, no_repeat_ngram_size=2, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out, skip_special_tokens=True)
    assert all(t.startswith('a photo of blue star that is') for t in texts[:4]), texts
    assert all(t.startswith('a photo of circle that is') for t in texts[4:]), texts
    assert set(tokenize(texts).flatten().tolist()) - {0} <= set(world_token_ids())
    # the clause names only what the concept leaves open
    assert not any('blue' in t[len('a photo of blue star'):] for t in texts[:4])
