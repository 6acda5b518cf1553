"""Works with what users already have, through the commands a user types: the original code's files
both ways (each built here in the original's layout), FashionIQ and ImageNet as the original names
them, torch.hub."""
import json, os, pickle, subprocess, zipfile
from pathlib import Path
import pytest, torch
from searle import world
from searle.clip import build_clip, load_pseudo_tokens, save_pseudo_tokens
from searle.concepts import read_concept_table
from searle.core import load_json, save_json
from searle.data import FASHIONIQ_CATEGORIES, load_dataset, write_placeholder_images
from searle.phrases import save_phrases
from conftest import REPO, sh, fails

CLIP = world.world_clip_path()


@pytest.fixture(scope='module')
def root(small_world):
    return small_world(3, 40, 8, 4, 0)

@pytest.fixture(scope='module')
def phrases(root, tmp_path_factory):
    "A phrase file (JSON) for the world's vocabulary, and the dict."
    ph = {c: [f'a photo of {c} that is here', f'a photo of {c} on a table']
          for c in world.world_concepts()}
    p = tmp_path_factory.mktemp('phrases') / 'phrases.json'; save_phrases(ph, p)
    return p, ph

def tiny_fashioniq(root:Path) -> Path:
    ("Three categories of six images each; 'BX0000' is in dress and shirt, as 121 real images are "
     "in two categories.")
    for c in FASHIONIQ_CATEGORIES:
        names = [f'B{c[0].upper()}{i:04d}' for i in range(6)] + (['BX0000'] if c != 'toptee'
                                                                 else [])
        save_json(names, root/'image_splits'/f'split.{c}.val.json')
        save_json([{'target': names[1], 'candidate': names[0], 'captions': ['is red', 'is longer']},
                   {'target': names[2], 'candidate': names[-1],
                    'captions': ['is blue', 'has sleeves']}], root/'captions'/f'cap.{c}.val.json')
        write_placeholder_images([root/'images'/f'{n}.jpg' for n in names])
    return root

# --- bugs 1 and 6: FashionIQ through searle-concepts and searle-oti -------------------------------

def test_fashioniq_concepts_and_the_original_table_with_repeated_rows(root, phrases, tmp_path):
    fiq = tiny_fashioniq(tmp_path/'FashionIQ')
    sh('searle-concepts', '--out', tmp_path/'c.csv', '--dataset', 'fashioniq', '--dataset-path',
       fiq, '--vocabulary', root/'concepts.csv', '--clip-model', CLIP, '--top-k', 5)
    table = read_concept_table(tmp_path/'c.csv')
    union = {n for c in FASHIONIQ_CATEGORIES
             for n in load_json(fiq/'image_splits'/f'split.{c}.val.json')}
    assert (set(table) == union
            and len((tmp_path/'c.csv').read_text().splitlines()) == len(union) + 1)
    # the original writes one table over the categories' splits in turn: the image in two categories
    # appears twice
    header, *rows = (tmp_path/'c.csv').read_text().splitlines()
    by_name = {r.split(',', 1)[0]: r for r in rows}
    orig = [header] + [by_name[n] for c in FASHIONIQ_CATEGORIES
                       for n in load_json(fiq/'image_splits'/f'split.{c}.val.json')]
    assert len(orig) - 1 == len(union) + 1
    (tmp_path/'orig.csv').write_text('\n'.join(orig) + '\n')
    sh('searle-oti', tmp_path/'orig.csv', phrases[0], '--dataset', 'fashioniq', '--dataset-path',
       fiq, '--clip-model', CLIP, '--steps', 2, '--out', tmp_path/'oti', '--no-progress')
    refs = {q['candidate'] for c in FASHIONIQ_CATEGORIES
            for q in load_json(fiq/'captions'/f'cap.{c}.val.json')}
    assert set(load_pseudo_tokens(tmp_path/'oti'/'oti_pseudo_tokens.pt')[0]) == refs
    bad = orig[:-1] + [orig[-1].rsplit(',', 1)[0] + ',Other']  # a repeated row that differs
    bad.append(next(r for r in orig[1:] if r.startswith('BX0000,')).rsplit(',', 1)[0] + ',Other')
    (tmp_path/'bad.csv').write_text('\n'.join(bad) + '\n')
    fails('searle-oti', tmp_path/'bad.csv', phrases[0], '--dataset', 'fashioniq', '--dataset-path',
          fiq, '--clip-model', CLIP, '--steps', 2, '--out', tmp_path/'oti2', '--no-progress',
          match="'BX0000' is listed twice with different concepts")

# --- bug 4 and the original layouts: ImageNet names, phrases as pickles, OTI folders both ways ----

def test_imagenet_names_and_original_oti_layout_both_ways(root, phrases, tmp_path):
    files = [tmp_path/'ImageNet1K'/'test'/f'ILSVRC2012_test_{i:08d}.JPEG' for i in range(1, 7)]
    write_placeholder_images(files)
    sh('searle-concepts', '--out', tmp_path/'c.csv', '--dataset', 'imagenet', '--dataset-path',
       tmp_path/'ImageNet1K', '--vocabulary', root/'concepts.csv', '--clip-model', CLIP, '--top-k',
       5)
    # 'ILSVRC2012_test_00000001.JPEG', as the original
    assert list(read_concept_table(tmp_path/'c.csv')) == [f.name for f in files]
    # phrases as the original's concept_to_phrases.pkl and as the released GPTNeo27B.zip
    (tmp_path/'concept_to_phrases.pkl').write_bytes(pickle.dumps(phrases[1]))
    with zipfile.ZipFile(tmp_path/'GPTNeo27B.zip', 'w') as z:
        z.writestr('GPTNeo27B/concept_to_phrases.pkl', pickle.dumps(phrases[1]))
    outs = {}
    for name, ph in (('json', phrases[0]), ('pkl', tmp_path/'concept_to_phrases.pkl'),
                     ('zip', tmp_path/'GPTNeo27B.zip')):
        sh('searle-oti', tmp_path/'c.csv', ph, '--dataset', 'imagenet', '--dataset-path',
           tmp_path/'ImageNet1K', '--clip-model', CLIP, '--steps', 3, '--out', tmp_path/name,
           '--no-progress', *(['--original-layout'] if name == 'json' else []))
        outs[name] = torch.load(tmp_path/name/'oti_pseudo_tokens.pt', weights_only=True)
    assert outs['json']['names'] == [f.name for f in files]
    for k in ('pkl', 'zip'): assert torch.equal(outs[k]['tokens'], outs['json']['tokens'])
    sh('searle-oti', tmp_path/'c.csv', phrases[0], '--dataset', 'imagenet', '--dataset-path',
       tmp_path/'ImageNet1K', '--clip-model', CLIP,
       # another compute grouping: the same tokens
       '--steps', 3, '--out', tmp_path/'b4', '--no-progress', '--batch-size', 4)
    b4 = torch.load(tmp_path/'b4'/'oti_pseudo_tokens.pt', weights_only=True)['tokens']
    d = (b4 - outs['json']['tokens']).abs().max().item()
    assert d <= 1e-5, f'--batch-size 4 vs the default: max |delta| {d:.3g} > 1e-5'
    # what the original scripts read: a pickled list and two bare tensors
    orig = tmp_path/'json'/'original'
    assert pickle.loads((orig/'image_names.pkl').read_bytes()) == outs['json']['names']
    assert torch.equal(torch.load(orig/'oti_pseudo_tokens.pt'), outs['json']['tokens'])
    assert torch.equal(torch.load(orig/'ema_oti_pseudo_tokens.pt'), outs['json']['ema_tokens'])

def test_phrases_command_writes_the_original_pickle(root, tmp_path):
    sh('searle-phrases', '--out', tmp_path/'p.json', '--vocabulary', root/'concepts.csv', '--model',
       world.world_gpt_path(), '--num-return-sequences', 2, '--limit', 3, '--original-layout')
    ours = load_json(tmp_path/'p.json')['phrases']
    assert len(ours) == 3 and pickle.loads((tmp_path/'concept_to_phrases.pkl').read_bytes()) == ours

def _write_original_oti(folder:Path, names, tokens, ema):
    "The three files of the original's OTI script, as it writes them."
    folder.mkdir(parents=True)
    torch.save(tokens, folder/'oti_pseudo_tokens.pt')
    torch.save(ema, folder/'ema_oti_pseudo_tokens.pt')
    (folder/'image_names.pkl').write_bytes(pickle.dumps(names))

def test_validate_reads_the_original_oti_folder_and_phi_checkpoints(root, tmp_path):
    model = load_clip_cpu()
    refs = load_dataset('circo', root).references().names
    g = torch.Generator().manual_seed(0)
    tok = 0.02 * torch.randn(len(refs), model.token_embedding.weight.shape[1], generator=g)
    save_pseudo_tokens(tmp_path/'ours.pt', refs, tok)
    # the original's CIRCO output lists a reference twice, with the same token
    _write_original_oti(tmp_path/'orig', refs + refs[:1], torch.cat([tok, tok[:1]]) + 1,
                        torch.cat([tok, tok[:1]]))
    val = lambda *a: json.loads(sh('searle-validate', '--dataset', 'circo', '--dataset-path', root,
                                   '--clip-model', CLIP, '--no-progress', '--cache-dir',
                                   tmp_path/'cache', *a).split('\nleft out')[0])
    m = val('--tokens', tmp_path/'ours.pt', '--out', tmp_path/'v1')
    # the folder: EMA tokens
    assert val('--tokens', tmp_path/'orig', '--out', tmp_path/'v2') == m
    # or one of its files
    assert val('--tokens', tmp_path/'orig'/'ema_oti_pseudo_tokens.pt', '--out', tmp_path/'v3') == m
    _write_original_oti(tmp_path/'diff', refs + refs[:1], torch.cat([tok, tok[1:2]]),
                        torch.cat([tok, tok[1:2]]))
    fails('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--clip-model', CLIP,
          '--tokens', tmp_path/'diff', '--out', tmp_path/'v4',
          match=f"[{refs[0]!r}] are listed more than once with different tokens")
    # phi checkpoints as the original writes them: {'Phi': state_dict}, with or without the epoch
    from searle.phi import Phi
    D, W = model.text_projection.shape[1], model.token_embedding.weight.shape[1]
    sd = Phi(D, 4 * D, W).state_dict()
    torch.save({'Phi': sd}, tmp_path/'phi_released.pt')
    torch.save({'epoch': 7, 'Phi': sd}, tmp_path/'phi_epoch.pt')
    a = val('--eval-type', 'phi', '--phi-checkpoint', tmp_path/'phi_released.pt', '--out',
            tmp_path/'p1')
    assert (val('--eval-type', 'phi', '--phi-checkpoint', tmp_path/'phi_epoch.pt', '--out',
                tmp_path/'p2') == a and a != m)

def load_clip_cpu():
    from searle.clip import load_clip
    return load_clip(CLIP, device='cpu')

def test_original_submission_files_are_read(root, tmp_path):
    ("CIRCO files with numeric ids (keys strings, as JSON writes them) score; CIRR's two files "
     "pass the checker.")
    from searle.retrieval import check_submission
    val = load_json(root/'annotations'/'val.json')
    gallery = [im['id']
               for im in load_json(root/'COCO2017_unlabeled'/'annotations'
                                   /'image_info_unlabeled2017.json')['images'] if im['in_gallery']]
    sub = {str(q['id']): (q['gt_img_ids'] + [g for g in gallery if g not in q['gt_img_ids']])[:50]
           for q in val}
    (tmp_path/'circo_val.json').write_text(json.dumps(sub))
    m = json.loads(sh('searle-score', tmp_path/'circo_val.json', '--dataset-path', root))
    assert m['map@50'] == m['recall@5'] == 100
    test = load_json(root/'annotations'/'test.json')
    assert check_submission({str(q['id']): gallery[:50] for q in test}, 'circo',
                            root)['queries'] == len(test)

# --- torch.hub ------------------------------------------------------------------------------------

def test_hub_entry_point_returns_released_phi_and_the_encoder(tmp_path, monkeypatch):
    from searle.clip import encode_with_pseudo_tokens
    from searle.phi import Phi
    monkeypatch.setenv('HOME', str(tmp_path/'home'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.setenv('SEARLE_OFFLINE', '1')
    with pytest.raises(FileNotFoundError,
                       match=r'put the file from '
                             r'https://github.com/miccunifi/SEARLE/releases/download/weights/SEARLE_ViT-B32.pt at .*home/.cache/searle/SEARLE_ViT-B32.pt'):
        torch.hub.load(str(REPO), 'searle', source='local', backbone='ViT-B/32')
    torch.manual_seed(0); sd = Phi(512, 2048, 512).state_dict()
    (tmp_path/'torch'/'hub'/'checkpoints').mkdir(parents=True)
    # where the original's entry point puts it
    torch.save({'Phi': sd}, tmp_path/'torch'/'hub'/'checkpoints'/'SEARLE_ViT-B32.pt')
    phi, enc = torch.hub.load(str(REPO), 'searle', source='local', backbone='ViT-B/32')
    assert enc is encode_with_pseudo_tokens and not phi.training
    assert all(torch.equal(phi.state_dict()[k], v) for k, v in sd.items())
    (tmp_path/'home'/'.cache'/'searle').mkdir(parents=True)
    # searle's cache first
    torch.save({'Phi': {k: v + 1 for k, v in sd.items()}},
               tmp_path/'home'/'.cache'/'searle'/'SEARLE_ViT-B32.pt')
    phi2, _ = torch.hub.load(str(REPO), 'searle', source='local', backbone='ViT-B/32')
    assert torch.equal(phi2.state_dict()['layers.0.bias'], sd['layers.0.bias'] + 1)
    with pytest.raises(ValueError, match="expected one of \\['ViT-B/32', 'ViT-L/14'\\]"):
        torch.hub.load(str(REPO), 'searle', source='local', backbone='RN50')

# --- incomplete downloads: --missing-images and --truncated-images through the commands -----------

def _copy_world(root, dst):
    import shutil
    shutil.copytree(root, dst); return dst

def test_validate_and_submit_skip_missing_images_and_decode_truncated_ones(root, tmp_path):
    w = _copy_world(root, tmp_path/'w')
    ds = load_dataset('circo', w)
    q0 = ds.queries()[0]
    gone_gallery = next(n for n in ds.gallery().names
                        if all(n not in (q.ground_truths or []) for q in ds.queries()))
    # an incomplete download
    ds.image_path(q0.reference).unlink(); ds.image_path(gone_gallery).unlink()
    base = ('searle-validate', '--dataset', 'circo', '--dataset-path', w, '--clip-model', CLIP,
            '--eval-type', 'image+text', '--no-progress')
    # the default refuses
    fails(*base, '--out', tmp_path/'v0', match='2 images')
    out = sh(*base, '--out', tmp_path/'v1', '--missing-images', 'skip')
    assert ('left out: 2 missing images, 1 queries that needed them; 0 truncated images decoded'
            in out)
    lo = load_json(tmp_path/'v1'/'left_out.json')
    assert (sorted(lo['missing_images']) == sorted([q0.reference, gone_gallery])
            and lo['skipped_queries'] == [q0.id])
    cfg = load_json(tmp_path/'v1'/'config.json')
    assert (cfg['left_out'] == {'missing_images': 2, 'skipped_queries': 1, 'truncated_images': 0}
            and cfg['config']['missing_images'] == 'skip')
    # a truncated gallery image: an error by default, decoded (and recorded) with --truncated-images
    # decode
    cut = ds.image_path(ds.gallery().names[1])
    # cut short
    write_placeholder_images([tmp_path/'full.png'], size=64)
    cut.write_bytes((tmp_path/'full.png').read_bytes()[:200])
    fails(*base, '--out', tmp_path/'v2', '--missing-images', 'skip',
          match='--truncated-images decode')
    out = sh(*base, '--out', tmp_path/'v3', '--missing-images', 'skip', '--truncated-images',
             'decode')
    assert '1 truncated images decoded' in out
    assert load_json(tmp_path/'v3'/'left_out.json')['truncated_images'] == [ds.gallery().names[1]]
    assert load_json(tmp_path/'v3'/'config.json')['left_out']['truncated_images'] == 1
    # the submission: the missing gallery image is not ranked, and what was left out is recorded
    # beside the files
    out = sh('searle-submit', '--dataset', 'circo', '--dataset-path', w, '--clip-model', CLIP,
             '--eval-type', 'image+text', '--no-progress', '--out', tmp_path/'s',
             '--missing-images', 'skip', '--truncated-images', 'decode')
    sub = load_json(tmp_path/'s'/'circo_test.json')
    assert (all(gone_gallery not in ids for ids in sub.values())
            and len(sub) == len(load_json(w/'annotations'/'test.json')))
    assert load_json(tmp_path/'s'/'left_out.json')['counts']['truncated_images'] == 1

def test_concepts_and_oti_skip_missing_images(root, phrases, tmp_path):
    fiq = tiny_fashioniq(tmp_path/'FashionIQ')
    # a dress gallery image, the reference of no query
    (fiq/'images'/'BD0005.jpg').unlink()
    (fiq/'images'/'BS0000.jpg').unlink()                         # the reference of a shirt query
    c = ('searle-concepts', '--out', tmp_path/'c.csv', '--dataset', 'fashioniq', '--dataset-path',
         fiq, '--vocabulary', root/'concepts.csv', '--clip-model', CLIP, '--top-k', 5)
    fails(*c, match='missing')
    out = sh(*c, '--missing-images', 'skip')
    assert 'left out: 2 missing images' in out
    assert not {'BD0005', 'BS0000'} & set(read_concept_table(tmp_path/'c.csv'))
    assert sorted(load_json(tmp_path/'c.csv.left_out.json')['missing_images']) == ['BD0005',
                                                                                   'BS0000']
    sh('searle-oti', tmp_path/'c.csv', phrases[0], '--dataset', 'fashioniq', '--dataset-path', fiq,
       '--clip-model', CLIP, '--steps', 2, '--out', tmp_path/'oti', '--no-progress',
       '--missing-images', 'skip')
    names = load_pseudo_tokens(tmp_path/'oti'/'oti_pseudo_tokens.pt')[0]
    assert 'BS0000' not in names and 'BD0000' in names
    assert load_json(tmp_path/'oti'/'left_out.json')['skipped_queries'] == ['shirt/0']
    assert load_json(tmp_path/'oti'/'config.json')['left_out']['missing_images'] == 2

def test_bad_incomplete_download_options_fail_before_any_work(root, tmp_path):
    fails('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--clip-model',
          tmp_path/'no_such_clip.pt', '--eval-type', 'image+text', '--truncated-images', 'repair',
          '--out', tmp_path/'v', match="argument --truncated-images: invalid choice: 'repair'")
    assert not (tmp_path/'v').exists()
