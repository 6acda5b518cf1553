"""The benchmark loaders, metrics, validation and submission files against the real annotation
files.

The annotations live in ../shared/data beside the repository (never copied into it); the images are
not public, so tiny placeholder images are generated once per session for every name the annotations
mention (for CIRCO, also an `image_info_unlabeled2017.json` holding the referenced ids plus
distractors)."""
import json, os, random
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
if (not (DATA / 'circo').is_dir() or not (DATA / 'cirr').is_dir()
    or not (DATA / 'fashioniq').is_dir()):
    pytest.skip(f'real benchmark annotations not found at {DATA}', allow_module_level=True)

from searle.core import load_json, save_json
from searle.clip import build_clip, save_clip, save_pseudo_tokens
from searle.runs import Job
from searle.data import (CIRCO_ASPECTS, FASHIONIQ_CATEGORIES, load_dataset,
                         write_placeholder_images)
from searle.metrics import pad_ids
from searle.retrieval import (benchmark_metrics, check_submission, run_submission, run_validation,
                              score_circo_submission)

torch.set_num_threads(1)
N_DISTRACTORS = 300  # CIRCO gallery images that no query mentions

EXPECTED_QUERIES = {('circo', 'val'): 220, ('circo', 'test'): 800, ('cirr', 'val'): 4181,
                    ('cirr', 'test1'): 4148}
CIRR_KEYS = ['recall@1', 'recall@5', 'recall@10', 'recall@50', 'recall_subset@1', 'recall_subset@2',
             'recall_subset@3']
CIRCO_KEYS = ([f'map@{k}' for k in (5, 10, 25, 50)] + [f'recall@{k}' for k in (5, 10, 25, 50)]
              + [f'semantic_map@10/{a}' for a in CIRCO_ASPECTS])
FIQ_KEYS = [f'{c}/recall@{k}' for c in (*FASHIONIQ_CATEGORIES, 'average') for k in (10, 50)]


def _circo_ids():
    ids = set()
    for split in ('val', 'test'):
        for q in load_json(DATA / 'circo' / 'annotations' / f'{split}.json'):
            ids |= {q['reference_img_id'], *q.get('gt_img_ids', [])}
    return ids


@pytest.fixture(scope='session')
def roots(tmp_path_factory):
    ("Benchmark folders in the users' layouts: real annotations (linked), placeholder images "
     "(written).")
    root = tmp_path_factory.mktemp('benchmarks')
    (root / 'CIRR').mkdir(); os.symlink(DATA / 'cirr' / 'cirr', root / 'CIRR' / 'cirr')
    (root / 'FashionIQ').mkdir()
    for d in ('captions', 'image_splits'):
        os.symlink(DATA / 'fashioniq' / d, root / 'FashionIQ' / d)
    (root / 'CIRCO').mkdir()
    os.symlink(DATA / 'circo' / 'annotations', root / 'CIRCO' / 'annotations')
    ids = _circo_ids()
    rng = random.Random(0)
    while len(ids) < len(_circo_ids()) + N_DISTRACTORS: ids.add(rng.randrange(1, 600_000))
    images = [{'id': i, 'file_name': f'{i:012d}.jpg'} for i in sorted(ids)]
    save_json({'images': images},
              root / 'CIRCO' / 'COCO2017_unlabeled' / 'annotations'
              / 'image_info_unlabeled2017.json')
    paths = [root / 'CIRCO' / 'COCO2017_unlabeled' / 'unlabeled2017' / im['file_name']
             for im in images]
    for split in ('val', 'test1'):
        paths += load_dataset('cirr', root / 'CIRR', split=split, check='none').required_paths()
    for c in FASHIONIQ_CATEGORIES:
        for split in ('val', 'test'):
            paths += load_dataset('fashioniq', root / 'FashionIQ', split=split, category=c,
                                  check='none').required_paths()
    write_placeholder_images(dict.fromkeys(paths))
    return {'cirr': root / 'CIRR', 'circo': root / 'CIRCO', 'fashioniq': root / 'FashionIQ',
            'tmp': root}


@pytest.fixture(scope='session')
def tiny(roots):
    "A tiny CLIP checkpoint file and a pseudo-token file covering every reference image."
    model = build_clip('tiny')
    save_clip(model, roots['tmp'] / 'tiny_clip.pt')
    names = []
    for name, split in (('cirr', 'val'), ('cirr', 'test1'), ('circo', 'val'), ('circo', 'test')):
        names += load_dataset(name, roots[name], split=split, check='none').references().names
    for c in FASHIONIQ_CATEGORIES:
        names += load_dataset('fashioniq', roots['fashioniq'], category=c,
                              check='none').references().names
    names = list(dict.fromkeys(names))
    g = torch.Generator().manual_seed(0)
    save_pseudo_tokens(roots['tmp'] / 'tokens.pt', names,
                       0.02 * torch.randn(len(names), model.token_embedding.weight.shape[1],
                                          generator=g))
    return {'clip': roots['tmp'] / 'tiny_clip.pt', 'tokens': roots['tmp'] / 'tokens.pt',
            'cache': roots['tmp'] / 'feature_cache',
            'job': Job(device='cpu', batch_size=64, progress=False,
                       cache_dir=roots['tmp'] / 'feature_cache')}


# --- loaders --------------------------------------------------------------------------------------

@pytest.mark.parametrize('name,split', list(EXPECTED_QUERIES))
def test_cirr_circo_loaders_read_every_query(roots, name, split):
    ds = load_dataset(name, roots[name], split=split)
    raw = load_json(roots[name] / ('annotations' if name == 'circo' else 'cirr/captions') /
                    (f'{split}.json' if name == 'circo' else f'cap.rc2.{split}.json'))
    qs = ds.queries()
    assert len(qs) == EXPECTED_QUERIES[(name, split)] == len(raw)
    assert len({q.id for q in qs}) == len(qs)
    gallery = set(ds.gallery().names)
    assert all(q.reference in gallery for q in qs)
    if name == 'cirr':
        assert [q.id for q in qs] == [str(r['pairid']) for r in raw]
        assert all(len(q.group) == 6 and q.reference in q.group for q in qs)
        assert ds.has_targets == (split == 'val') and ds.exclude_reference
    else:
        assert [q.id for q in qs] == [str(r['id']) for r in raw]
        assert all(q.shared_concept for q in qs) and not ds.exclude_reference
        if split == 'val':
            assert all(q.target == q.ground_truths[0] and set(q.ground_truths) <= gallery
                       and q.semantic_aspects for q in qs)
        assert len(gallery) == len(_circo_ids()) + N_DISTRACTORS
    ref_key = 'reference' if name == 'cirr' else 'reference_img_id'
    # de-duplicated, in order
    assert ds.references().names == [str(r) for r in dict.fromkeys(x[ref_key] for x in raw)]


@pytest.mark.parametrize('category', FASHIONIQ_CATEGORIES)
@pytest.mark.parametrize('split', ['val', 'test'])
def test_fashioniq_loader_reads_every_query(roots, category, split):
    ds = load_dataset('fashioniq', roots['fashioniq'], split=split, category=category)
    raw = load_json(roots['fashioniq'] / 'captions' / f'cap.{category}.{split}.json')
    assert len(ds) == len(raw) > 1900
    assert [(q.reference, q.captions) for q in ds.queries()] == [(r['candidate'], r['captions'])
                                                                 for r in raw]
    assert ds.has_targets == (split == 'val')
    assert len(ds.gallery()) == len(load_json(roots['fashioniq'] / 'image_splits'
                                              / f'split.{category}.{split}.json'))
    refs = ds.references().names
    # de-duplicated
    assert len(refs) == len(set(refs)) == len({r['candidate'] for r in raw}) < len(raw)


def test_fashioniq_stages_take_the_union_of_categories(roots):
    ("Concepts (stage 1) and OTI (stage 2) of FashionIQ cover the images of all three categories, "
     "each once.")
    from searle.data import dataset_images as _dataset_images
    ims, refs = (_dataset_images('fashioniq', roots['fashioniq'], 'val', w)
                 for w in ('images', 'references'))
    per_cat = [load_dataset('fashioniq', roots['fashioniq'], split='val', category=c)
               for c in FASHIONIQ_CATEGORIES]
    assert (set(ims.names) == set().union(*(d.images().names for d in per_cat))
            and len(ims.names) == len(set(ims.names)))
    assert set(refs.names) == set().union(*(d.references().names
                                            for d in per_cat)) <= set(ims.names)
    assert all(p.is_file() for p in ims.paths)


def _hide(path):
    "Move a file away; returns a function that puts it back."
    away = path.with_name(path.name + '.away'); path.rename(away)
    return lambda: away.rename(path)


def test_missing_image_is_an_error_not_a_smaller_dataset(roots):
    cirr = load_dataset('cirr', roots['cirr'])
    q = cirr.queries()[0]
    restore = _hide(cirr.image_path(q.reference))
    try:
        with pytest.raises(FileNotFoundError, match=r'1 images .* missing') as e:
            load_dataset('cirr', roots['cirr'])
        assert q.reference in str(e.value)
    finally: restore()
    circo = load_dataset('circo', roots['circo'])
    gt = circo.queries()[5].ground_truths[-1]
    restore = _hide(circo.image_path(gt))
    try:
        with pytest.raises(FileNotFoundError, match=f'{int(gt):012d}.jpg'):
            load_dataset('circo', roots['circo'])
    finally: restore()
    fiq = load_dataset('fashioniq', roots['fashioniq'], category='shirt')
    restore = _hide(fiq.image_path(fiq.queries()[3].target))
    try:
        with pytest.raises(FileNotFoundError, match=fiq.queries()[3].target):
            load_dataset('fashioniq', roots['fashioniq'], category='shirt')
    finally: restore()
    assert len(load_dataset('cirr', roots['cirr'])) == 4181


def test_missing_annotation_and_undecodable_image(roots, tmp_path):
    with pytest.raises(FileNotFoundError, match='cap.rc2.val.json') as e:
        load_dataset('cirr', tmp_path)
    assert 'split.rc2.{train,val,test1}.json' in str(e.value)  # the expected layout is shown
    with pytest.raises(FileNotFoundError, match='image_info_unlabeled2017.json'):
        load_dataset('circo', DATA / 'circo')
    circo = load_dataset('circo', roots['circo'])
    p = circo.image_path(circo.queries()[0].reference)
    good = p.read_bytes()
    try:
        p.write_bytes(b'\xff\xd8 truncated')
        with pytest.raises(ValueError, match=p.name):
            load_dataset('circo', roots['circo'], check='decode')
    finally: p.write_bytes(good)


# --- metrics on oracle and random rankings --------------------------------------------------------

def _oracle(ds):
    "Ground truths first, then other gallery images (never the reference where it is excluded)."
    names = ds.gallery().names
    index_of = {n: i for i, n in enumerate(names)}
    rows = []
    for q in ds.queries():
        gts = [index_of[g] for g in q.ground_truths]
        fill = [i for i in range(60) if i not in gts and names[i] != q.reference]
        rows.append((gts + fill)[:50])
    return torch.tensor(rows), index_of


@pytest.mark.parametrize('name', ['cirr', 'circo', 'fashioniq'])
def test_oracle_ranking_scores_100_on_every_metric(roots, name):
    dss = ([load_dataset(name, roots[name], category=c) for c in FASHIONIQ_CATEGORIES]
           if name == 'fashioniq'
           else [load_dataset(name, roots[name])])
    for ds in dss:
        ranking, index_of = _oracle(ds)
        group = (torch.tensor([[float(m == q.target) for m in q.group] for q in ds.queries()])
                 if name == 'cirr' else None)
        m = benchmark_metrics(name, ds.queries(), ranking, index_of, group)
        assert list(m) == {'cirr': CIRR_KEYS, 'circo': CIRCO_KEYS,
                           'fashioniq': ['recall@10', 'recall@50']}[name]
        assert all(v == pytest.approx(100.0) for v in m.values()), m


def test_random_ranking_cirr_subset_recall_near_chance(roots):
    ds = load_dataset('cirr', roots['cirr'])
    ranking, index_of = _oracle(ds)
    g = torch.Generator().manual_seed(0)
    m = benchmark_metrics('cirr', ds.queries(),
                          torch.randperm(len(index_of), generator=g)[:50].repeat(len(ds), 1),
                          index_of, torch.rand(len(ds), 6, generator=g))
    assert abs(m['recall_subset@1'] - 20) < 2.5, m  # five candidates; std over 4,181 queries ≈ 0.6
    assert abs(m['recall_subset@3'] - 60) < 3.5, m
    assert m['recall@1'] < 1, f"recall@1 of a random ranking {m['recall@1']:.3g} (>= 1)"


def test_scoring_a_circo_submission(roots, tmp_path):
    ds = load_dataset('circo', roots['circo'])
    gallery = ds.gallery().names
    oracle = {q.id: (q.ground_truths + [n for n in gallery[:60] if n not in q.ground_truths])[:50]
              for q in ds.queries()}
    save_json(oracle, tmp_path / 'oracle.json')
    m = score_circo_submission(tmp_path / 'oracle.json', roots['circo'])
    assert list(m) == CIRCO_KEYS and all(v == pytest.approx(100) for v in m.values())
    # target moved to rank 6: recall@5 loses exactly that query, mAP@5 drops by a hand-computable
    # amount
    q0 = ds.queries()[0]
    moved = dict(oracle)
    lst = [n for n in oracle[q0.id] if n != q0.target]
    moved[q0.id] = lst[:5] + [q0.target] + lst[5:49]
    m2 = score_circo_submission(moved, roots['circo'])
    assert (m2['recall@5'] == pytest.approx(100 * 219 / 220)
            and m2['recall@10'] == pytest.approx(100))
    n = len(q0.ground_truths)  # q0's AP@5: the other ground truths fill ranks 1..n-1
    assert m2['map@5'] == pytest.approx(100 * (219 + min(n - 1, 5) / min(5, n)) / 220)
    with pytest.raises(ValueError, match=f'query {q0.id} lists ids more than once'):
        score_circo_submission({**oracle, q0.id: oracle[q0.id][:49] + [oracle[q0.id][0]]},
                               roots['circo'])
    with pytest.raises(ValueError, match=r"1 queries .* have no prediction; the first: \['7'\]"):
        score_circo_submission({k: v for k, v in oracle.items() if k != '7'}, roots['circo'])


# --- end to end with a tiny CLIP ------------------------------------------------------------------

@pytest.mark.parametrize('name', ['cirr', 'circo', 'fashioniq'])
def test_validation_end_to_end(roots, tiny, name, tmp_path):
    # FashionIQ's galleries are all used, its queries cut
    extra = {'max_queries': 150} if name == 'fashioniq' else {}
    m = run_validation(name, roots[name], tiny['clip'], tokens=tiny['tokens'], out_dir=tmp_path,
                       job=tiny['job'], **extra)
    keys = {'cirr': CIRR_KEYS, 'circo': CIRCO_KEYS, 'fashioniq': FIQ_KEYS}[name]
    assert sorted(m) == sorted(keys) and all(0 <= v <= 100 for v in m.values()), m
    assert load_json(tmp_path / 'metrics.json') == m
    cfg = load_json(tmp_path / 'config.json')
    assert (cfg['config']['dataset'] == name
            and cfg['config']['method'] == f"tokens:{tiny['tokens']}")
    assert cfg['clip']['clip'] == str(tiny['clip'])
    # a val-format submission scores exactly what validation reported; so does a baseline's
    if name == 'circo':
        paths = run_submission('circo', roots['circo'], tiny['clip'], tokens=tiny['tokens'],
                               out_dir=tmp_path / 'sub', split='val', job=tiny['job'])
        assert score_circo_submission(paths['circo'], roots['circo']) == m
        b = run_validation(name, roots[name], tiny['clip'], baseline='image+text', job=tiny['job'])
        assert sorted(b) == sorted(keys) and b != m


def test_submission_files_pass_the_checker(roots, tiny, tmp_path):
    cirr = run_submission('cirr', roots['cirr'], tiny['clip'], tokens=tiny['tokens'],
                          out_dir=tmp_path, job=tiny['job'])
    circo = run_submission('circo', roots['circo'], tiny['clip'], tokens=tiny['tokens'],
                           out_dir=tmp_path, job=tiny['job'])
    assert check_submission(cirr['recall'], 'cirr', roots['cirr'], kind='recall')['queries'] == 4148
    assert check_submission(cirr['recall_subset'], 'cirr', roots['cirr'],
                            kind='recall_subset')['queries'] == 4148
    assert check_submission(circo['circo'], 'circo', roots['circo'])['queries'] == 800
    rc, rs, cc = (load_json(p) for p in (cirr['recall'], cirr['recall_subset'], circo['circo']))
    assert (rc['version'], rc['metric'], rs['metric']) == ('rc2', 'recall', 'recall_subset')
    assert len(rc) == len(rs) == 4148 + 2 and len(cc) == 800
    test1 = load_dataset('cirr', roots['cirr'], split='test1', check='none')
    for q in test1.queries()[:200]:
        assert len(rc[q.id]) == 50 and q.reference not in rc[q.id]
        assert len(rs[q.id]) == 3 and set(rs[q.id]) <= set(q.group) - {q.reference}
    assert all(len(v) == len(set(v)) == 50 and all(isinstance(x, str) for x in v)
               for v in cc.values())
    with pytest.raises(ValueError, match="query 0 is missing"):
        check_submission({k: v for k, v in cc.items() if k != '0'}, 'circo', roots['circo'])
    with pytest.raises(ValueError, match="'metric' must be 'recall_subset'"):
        check_submission({**rs, 'metric': 'recall'}, 'cirr', roots['cirr'], kind='recall_subset')


def test_the_original_circo_test_output_with_repeated_references(roots, tiny, tmp_path):
    ("The original's OTI on CIRCO test lists one name per query: 297636 and 304135 twice, with "
     "equal tokens.")
    import pickle
    from searle.clip import load_pseudo_tokens
    from searle.oti import import_official_tokens
    names = [str(q['reference_img_id'])
             for q in load_json(DATA / 'circo' / 'annotations' / 'test.json')]
    rep = sorted({n for n in names if names.count(n) > 1})
    assert rep == ['297636', '304135']
    tnames, tok = load_pseudo_tokens(tiny['tokens'])
    row = {n: i for i, n in enumerate(tnames)}
    (tmp_path / 'orig').mkdir()
    torch.save(tok[[row[n] for n in names]], tmp_path / 'orig' / 'ema_oti_pseudo_tokens.pt')
    (tmp_path / 'orig' / 'image_names.pkl').write_bytes(pickle.dumps(names))
    n2, t2 = load_pseudo_tokens(import_official_tokens(tmp_path / 'orig'
                                                       / 'ema_oti_pseudo_tokens.pt',
                                                       tmp_path / 'orig' / 'image_names.pkl',
                                                       tmp_path / 'imp.pt'))
    assert n2 == list(dict.fromkeys(names)) and torch.equal(t2, tok[[row[n] for n in n2]])
    paths = run_submission('circo', roots['circo'], tiny['clip'], tokens=tmp_path / 'orig',
                           out_dir=tmp_path / 'sub', job=tiny['job'])
    assert check_submission(paths['circo'], 'circo', roots['circo'])['queries'] == 800
