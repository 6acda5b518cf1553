"""Nothing lost, nothing silent: bad inputs and faults as a user meets them, through the commands a
user types. The real annotation files come from ../shared/data (copied to a temporary folder,
                                                    with placeholder images)."""
import json, os, shutil, subprocess
from pathlib import Path
import pytest
from searle import world
from searle.core import load_json, save_json
from searle.data import write_placeholder_images
from conftest import ENV, REPO, real_circo, real_cirr, run

CLIP = world.world_clip_path()

def one_line(r, *needles):
    "The command failed with a last line holding every needle, and no traceback; returns that line."
    assert r.returncode != 0, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert all(n in last for n in needles), last
    return last

# --- duplicate query ids: refused on loading, naming the file and the id

@pytest.mark.parametrize('dataset,split,command', [
    ('circo', 'test', 'searle-submit'), ('circo', 'val', 'searle-validate'),
    ('cirr', 'test1', 'searle-submit'), ('cirr', 'val', 'searle-validate')])
def test_duplicate_query_ids_are_refused(shared_dir, tmp_path, dataset, split, command):
    if dataset == 'circo':
        d = real_circo(shared_dir, tmp_path/'CIRCO', split)
        f, key = d/'annotations'/f'{split}.json', 'id'
    else:
        d = real_cirr(shared_dir, tmp_path/'CIRR', split)
        f, key = d/'cirr'/'captions'/f'cap.rc2.{split}.json', 'pairid'
    ann = load_json(f); os.chmod(f, 0o644)
    ann[7][key] = ann[3][key]; save_json(ann, f)         # two queries share one id
    r = run(command, '--dataset', dataset, '--dataset-path', d, '--split', split, '--clip-model',
            CLIP,
            '--eval-type', 'image+text', '--out', tmp_path/'out', '--no-progress')
    one_line(r, str(f), f'entries 3 and 7 share the {key} {ann[3][key]}')
    assert not (tmp_path/'out').exists() or not any((tmp_path/'out').iterdir())

# --- tokens made with another CLIP of the same width: refused, naming the file and both CLIPs

@pytest.fixture(scope='module')
def small_world(tmp_path_factory):
    d = tmp_path_factory.mktemp('world')
    return world.build_world(d / 'w', seed=6, n_gallery=40, n_queries=6, n_test=0, n_unlabeled=0,
                             progress=False)

def test_tokens_of_another_clip_are_refused(small_world, tmp_path):
    from searle.clip import build_clip, save_clip
    from searle.phrases import save_phrases
    a, b = tmp_path / 'a.pt', tmp_path / 'b.pt'
    save_clip(build_clip('tiny'), a)
    save_clip(build_clip('tiny', seed=3), b)     # one width, other weights
    save_phrases({c: [f'a photo of {c} here',
                      f'a {c} on a table'] for c in world.world_concepts()}, tmp_path / 'p.json')
    imgs = small_world / 'COCO2017_unlabeled' / 'unlabeled2017'
    on = ('--dataset', 'folder', '--dataset-path', imgs, '--quiet')
    circo = ('--dataset', 'circo', '--dataset-path', small_world)
    for args in (('searle-concepts', '--out', tmp_path / 'c.csv', '--vocabulary',
                  small_world / 'concepts.csv', '--top-k', 20),
                 ('searle-oti', tmp_path / 'c.csv', tmp_path / 'p.json', '--steps', 2, '--out',
                  tmp_path / 'oti')):
        r = run(*args, *circo, '--quiet', '--clip-model', a)
        assert r.returncode == 0, r.stderr[-2000:]
    tok = tmp_path / 'oti' / 'oti_pseudo_tokens.pt'
    val = ('searle-validate', '--dataset', 'circo', '--dataset-path', small_world, '--eval-type',
           'oti', '--tokens', tok,
           '--no-progress')
    r = run(*val, '--clip-model', a, '--out', tmp_path / 'va')
    assert r.returncode == 0, r.stderr[-2000:]   # its own CLIP
    one_line(run(*val, '--clip-model', b, '--out', tmp_path / 'vb'),
             f'{tok} holds tokens made with the CLIP {a}',
             f'not with the one given, {b}')
    one_line(run('searle-train-phi', tok, tmp_path / 'c.csv', tmp_path / 'p.json', *on,
                 '--clip-model', b, '--epochs', 1,
                 '--batch-size', 8, '--out', tmp_path / 'phi'),
             f'{tok} holds tokens made with the CLIP {a}', str(b))
    assert not (tmp_path / 'phi' / 'phi_final.pt').exists()

# --- searle-score refuses malformed predictions in one line

@pytest.fixture(scope='module')
def circo_val(shared_dir, tmp_path_factory):
    "The real CIRCO val annotations (the scorer reads no image) and predictions that score 100."
    d = tmp_path_factory.mktemp('circo_val')
    ann = load_json(shared_dir/'data'/'circo'/'annotations'/'val.json')
    save_json(ann, d/'annotations'/'val.json')
    ids = sorted({g for q in ann for g in q['gt_img_ids']} | {q['reference_img_id'] for q in ann})
    pad = lambda gts: gts + [i for i in ids if i not in gts][:50 - len(gts)]
    return d, {str(q['id']): pad(list(q['gt_img_ids'])) for q in ann}

@pytest.mark.parametrize('case,needle', [('floats', 'lists 355099.0 (a float); image ids are'),
                                         ('nested', '(a list); image ids are integers or strings'),
                                         ('dict',
                                          'maps to a dict; expected a list of 50 image ids'),
                                         ('int', 'maps to a int; expected a list of 50 image ids'),
                                         ('null',
                                          'maps to a NoneType; expected a list of 50 image ids'),
                                         ('twice', "the keys ['0'] are written more than once")])
def test_score_refuses_malformed_predictions(circo_val, tmp_path, case, needle):
    d, preds = circo_val
    # the well-formed file scores
    if case == 'floats':
        ok = run('searle-score', _write(tmp_path/'ok.json', preds), '--dataset-path', d)
        assert json.loads(ok.stdout)['map@50'] == 100
    q = next(k for k, v in preds.items() if 355099 in v) if case == 'floats' else '0'
    bad = {**preds, q: {'floats': [float(x) for x in preds[q]], 'nested': [preds[q]],
                        'dict': {'ids': preds[q]},
                        'int': 355099, 'null': None, 'twice': preds[q]}[case]}
    text = json.dumps(bad)
    # query 0 twice: the first is lost
    if case == 'twice': text = '{"0": ' + json.dumps(preds['1']) + ', ' + text[1:]
    (tmp_path/'bad.json').write_text(text)
    one_line(run('searle-score', tmp_path/'bad.json', '--dataset-path', d),
             str(tmp_path/'bad.json'), needle)

def _write(path, obj): path.write_text(json.dumps(obj)); return path

# --- what changed a result silently: an error, or one warning saying what changed and how much

def test_circo_query_without_ground_truths_is_refused(shared_dir, tmp_path):
    d = real_circo(shared_dir, tmp_path/'CIRCO', 'val'); f = d/'annotations'/'val.json'
    ann = load_json(f); ann[5]['gt_img_ids'] = []; save_json(ann, f)
    r = run('searle-validate', '--dataset', 'circo', '--dataset-path', d, '--clip-model', CLIP,
            '--eval-type', 'image+text',
            '--out', tmp_path/'out', '--no-progress')
    one_line(r, f"{f}, entry 5 (id {ann[5]['id']}): 'gt_img_ids' is empty")

def test_template_without_caption_is_refused(small_world, tmp_path):
    r = run('searle-validate', '--dataset', 'circo', '--dataset-path', small_world, '--clip-model',
            CLIP, '--eval-type',
            'text-only', '--template', 'a photo of $ that is red', '--out', tmp_path/'v',
            '--no-progress')
    one_line(r, "template 'a photo of $ that is red' has no {caption}: "
                "every query would get the same prompt")

def test_long_captions_are_cut_with_one_warning(small_world, tmp_path):
    w = tmp_path/'w'; shutil.copytree(small_world, w)
    ann = load_json(w/'annotations'/'val.json')
    ann[2]['relative_caption'] = 'is red ' * 60
    save_json(ann, w/'annotations'/'val.json')
    r = run('searle-validate', '--dataset', 'circo', '--dataset-path', w, '--clip-model', CLIP,
            '--eval-type', 'text-only',
            '--out', tmp_path/'v', '--no-progress')
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [l for l in r.stderr.splitlines() if 'longer than' in l]
    want = f"1 of {len(ann)} prompts are longer than CLIP's 77 tokens and were cut "
    want += "(the longest: 122"
    assert len(warned) == 1 and want in warned[0], r.stderr

def test_top_k_beyond_the_table_and_a_link_to_nothing_warn(small_world, tmp_path):
    imgs = tmp_path/'imgs'; shutil.copytree(small_world/'COCO2017_unlabeled'/'unlabeled2017', imgs)
    os.symlink(tmp_path/'nowhere.png', imgs/'gone.png')
    on = ('--dataset', 'folder', '--dataset-path', imgs, '--clip-model', CLIP)
    r = run('searle-concepts', '--out', tmp_path/'c.csv', '--vocabulary',
            small_world/'concepts.csv', '--top-k', 5, *on)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (f'{imgs}: left out 0 unreadable folders and 1 image names that are no file '
            f'(links to nothing) ({imgs/"gone.png"})') in r.stderr
    from searle.phrases import save_phrases
    save_phrases({c: [f'a photo of {c} here'] for c in world.world_concepts()}, tmp_path/'p.json')
    r = run('searle-oti', tmp_path/'c.csv', tmp_path/'p.json', '--top-k', 12, '--steps', 1,
            '--out', tmp_path/'oti', *on)
    assert r.returncode == 0, r.stderr[-2000:]
    want = f'{tmp_path/"c.csv"} holds 5 concepts per image: a top-k of 12 uses those 5'
    assert want in r.stderr, r.stderr[-2000:]

def test_query_on_a_gallery_of_only_the_reference_is_refused(small_world, tmp_path):
    (tmp_path/'g').mkdir()
    shutil.copy(sorted((small_world/'COCO2017_unlabeled'/'unlabeled2017').iterdir())[0],
                tmp_path/'g'/'ref.png')
    r = run('searle-query', 'ref.png', 'is red', '--gallery', tmp_path/'g', '--cache-dir',
            tmp_path/'cache', '--no-progress')
    one_line(r, f"--gallery {tmp_path/'g'}: nothing to rank, its only image is the reference")

# --- a decompression bomb in a gallery or a folder: one line, wherever images are opened

def write_bomb(path:Path) -> Path:
    "A PNG whose header says 20000x20000 pixels (PIL refuses it on opening, before decoding)."
    import struct, zlib
    from PIL import Image
    Image.new('RGB', (1, 1)).save(path); b = bytearray(path.read_bytes())
    b[16:24] = struct.pack('>II', 20000, 20000); b[29:33] = struct.pack('>I', zlib.crc32(b[12:29]))
    path.write_bytes(b); return path

@pytest.fixture
def bomb_gallery(small_world, tmp_path):
    g = tmp_path/'g'; shutil.copytree(small_world/'COCO2017_unlabeled'/'unlabeled2017', g)
    return g, write_bomb(g/'bomb.png')

def test_a_decompression_bomb_is_one_line(small_world, bomb_gallery, tmp_path):
    g, bomb = bomb_gallery
    needle = f'{bomb} is refused: its size suggests a decompression bomb'
    one_line(run('searle-concepts', '--out', tmp_path/'c.csv', '--vocabulary',
                 small_world/'concepts.csv', '--dataset', 'folder',
                 '--dataset-path', g, '--clip-model', CLIP, '--top-k', 5), needle)
    ref = sorted(g.glob('0*.png'))[0]
    one_line(run('searle-query', ref, 'is red', '--gallery', g, '--cache-dir', tmp_path/'cache',
                 '--no-progress'), needle)
    from searle.api import ComposedRetriever
    r = ComposedRetriever.from_pretrained('world', cache_dir=tmp_path/'cache', device='cpu')
    with pytest.raises(ValueError, match='decompression bomb'): r.index(g)

def test_a_decompression_bomb_stops_the_app_in_one_line(bomb_gallery, tmp_path):
    pytest.importorskip('gradio')
    g, bomb = bomb_gallery
    one_line(run('searle-app', '--gallery', g, '--port', 7911, '--cache-dir', tmp_path/'cache',
                 timeout=300),
             f'{bomb} is refused: its size suggests a decompression bomb')

# --- refused pickles: one line (no payload runs), and a CLIP file that is such a pickle says so

class _Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_refused_pickles_are_one_line_and_run_nothing(small_world, tmp_path):
    import pickle, zipfile, torch
    marker = tmp_path/'ran'
    evil = pickle.dumps({'dog': [_Payload(marker)]})
    (tmp_path/'phrases.pkl').write_bytes(evil)
    with zipfile.ZipFile(tmp_path/'GPTNeo27B.zip',
                         'w') as z: z.writestr('GPTNeo27B/concept_to_phrases.pkl', evil)
    circo = ('--dataset', 'circo', '--dataset-path', small_world)
    r = run('searle-concepts', '--out', tmp_path/'c.csv', '--vocabulary',
            small_world/'concepts.csv', '--top-k', 5, *circo,
            '--clip-model', CLIP, '--quiet')
    assert r.returncode == 0, r.stderr[-2000:]
    for ph in ('phrases.pkl', 'GPTNeo27B.zip'):
        one_line(run('searle-oti', tmp_path/'c.csv', tmp_path/ph, *circo, '--clip-model', CLIP,
                     '--steps', 1,
                     '--out', tmp_path/f'oti-{ph}'), 'refusing to load posix.system')
    # the original's OTI layout
    oti = tmp_path/'oti_original'; oti.mkdir()
    torch.save(torch.zeros(6, 64), oti/'oti_pseudo_tokens.pt')
    (oti/'image_names.pkl').write_bytes(pickle.dumps([_Payload(marker)]))
    val = ('searle-validate', *circo, '--eval-type', 'oti', '--out', tmp_path/'v', '--no-progress')
    one_line(run(*val, '--tokens', oti, '--clip-model', CLIP),
             'image_names.pkl: refusing to load posix.system')
    torch.save({'state_dict': {'x': _Payload(marker)}}, tmp_path/'clip.pt')
    one_line(run(*val, '--tokens', oti, '--clip-model', tmp_path/'clip.pt'),
             'image_names.pkl')  # tokens are read first
    one_line(run('searle-validate', *circo, '--eval-type', 'image-only', '--out', tmp_path/'v2',
                 '--clip-model', tmp_path/'clip.pt'),
             f"{tmp_path/'clip.pt'} holds code that was not run", 'posix.system')
    one_line(run('searle-validate', *circo, '--eval-type', 'image-only', '--out', tmp_path/'v3',
                 '--clip-model', f"open_clip:ViT-B-32/{tmp_path/'clip.pt'}"),
             'was refused, nothing in it run', 'posix.system')
    assert not marker.exists()                                                  # no payload ran

# --- a line, not a traceback: image info as a list, a huge phrase count, a 0x0 image

def test_image_info_as_a_list_is_one_line(small_world, tmp_path):
    w = tmp_path/'w'; shutil.copytree(small_world, w)
    info = w/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json'
    save_json(load_json(info)['images'], info)
    one_line(run('searle-validate', '--dataset', 'circo', '--dataset-path', w, '--clip-model',
                 CLIP, '--eval-type', 'image-only',
                 '--out', tmp_path/'v'),
             f"{info}: expected a JSON object whose 'images' is the list of images")

def test_a_huge_phrase_count_is_refused_by_the_parser(small_world, tmp_path):
    r = run('searle-phrases', '--out', tmp_path/'p.json', '--vocabulary',
            small_world/'concepts.csv', '--model',
            world.world_gpt_path(), '--num-return-sequences', 99999999999999)
    one_line(r, '--num-return-sequences', 'expected an integer in [1, 10000]')

def test_an_empty_image_is_one_error(small_world, tmp_path):
    from PIL import Image
    from searle.api import ComposedRetriever
    r = ComposedRetriever.from_pretrained('world', cache_dir=tmp_path/'cache', device='cpu')
    r.index(small_world/'COCO2017_unlabeled'/'unlabeled2017')
    with pytest.raises(ValueError, match='an image of 0x0 pixels has nothing to encode'):
        r.search(Image.new('RGB', (0, 0)), 'is red')

# --- one line naming the file or option, before the long work

def test_latin1_files_are_named(small_world, tmp_path):
    w = tmp_path/'w'; shutil.copytree(small_world, w)
    val = w/'annotations'/'val.json'
    val.write_bytes(val.read_text().replace('"relative_caption": "',
                                            '"relative_caption": "caf\u00e9 ', 1).encode('latin-1'))
    one_line(run('searle-validate', '--dataset', 'circo', '--dataset-path', w, '--clip-model',
                 CLIP, '--eval-type',
                 'image-only', '--out', tmp_path/'v'),
             f'{val} is not UTF-8 text (invalid continuation byte')
    voc = tmp_path/'voc.csv'
    voc.write_bytes('LabelName,DisplayName\n/m/1,Caf\u00e9\n/m/2,Dog\n'.encode('latin-1'))
    one_line(run('searle-concepts', '--out', tmp_path/'c.csv', '--vocabulary', voc, '--dataset',
                 'circo', '--dataset-path',
                 small_world, '--clip-model', CLIP), f'{voc} is not UTF-8 text')

def test_a_null_target_and_a_short_image_set_name_the_entry(small_world, shared_dir, tmp_path):
    w = tmp_path/'w'; shutil.copytree(small_world, w)
    val = w/'annotations'/'val.json'
    ann = load_json(val)
    ann[1]['target_img_id'] = None
    save_json(ann, val)
    one_line(run('searle-validate', '--dataset', 'circo', '--dataset-path', w, '--clip-model',
                 CLIP, '--eval-type',
                 'image-only', '--out', tmp_path/'v'),
             f"{val}, entry 1 (id {ann[1]['id']}): 'target_img_id' is a NoneType")
    d = real_cirr(shared_dir, tmp_path/'CIRR', 'val'); cap = d/'cirr'/'captions'/'cap.rc2.val.json'
    ann = load_json(cap)
    os.chmod(cap, 0o644)
    ann[9]['img_set']['members'] = ann[9]['img_set']['members'][:5]
    save_json(ann, cap)
    one_line(run('searle-validate', '--dataset', 'cirr', '--dataset-path', d, '--clip-model', CLIP,
                 '--eval-type',
                 'image-only', '--out', tmp_path/'v2'),
             f"{cap}, entry 9 (id {ann[9]['pairid']}): 'img_set' lists 5 members")

@pytest.mark.parametrize('option,value,needle', [('--math-batch-size', '-3',
                                                  'expected an integer >= 1'),
                                                 ('--lr', 'inf',
                                                  "expected a number > 0, got 'inf'"),
                                                 ('--lr', 'nan',
                                                  "expected a number > 0, got 'nan'"),
                                                 ('--batch-size', str(10**20),
                                                  'expected an integer >= 1 of at most')])
def test_numbers_that_cannot_work_are_refused_by_the_parser(small_world, option, value, needle):
    one_line(run('searle-oti', 'c.csv', 'p.json', '--dataset', 'circo', '--dataset-path',
                 small_world, option, value),
             option, needle)

def test_a_token_folder_without_tokens_is_named(small_world, tmp_path):
    (tmp_path/'empty').mkdir()
    one_line(run('searle-validate', '--dataset', 'circo', '--dataset-path', small_world,
                 '--eval-type', 'oti', '--tokens',
                 tmp_path/'empty', '--out', tmp_path/'v'),
             f"{tmp_path/'empty'} holds no pseudo tokens")

def test_a_language_model_that_is_an_image_folder_is_one_line(small_world, tmp_path):
    imgs = small_world/'COCO2017_unlabeled'/'unlabeled2017'
    r = run('searle-phrases', '--out', tmp_path/'p.json', '--vocabulary',
            small_world/'concepts.csv', '--model', imgs)
    last = one_line(r, f'{imgs} is a folder without config.json')
    assert r.stderr.strip().splitlines() == [last], r.stderr[-2000:]       # and nothing before it

def test_a_file_name_that_is_not_utf8_is_refused_before_any_work(small_world, tmp_path):
    imgs = tmp_path/'imgs'; shutil.copytree(small_world/'COCO2017_unlabeled'/'unlabeled2017', imgs)
    os.rename(next(imgs.glob('*.png')),
              os.fsdecode(bytes(imgs) + b'/caf\xe9.png'))     # a Latin-1 name
    r = run('searle-concepts', '--out', tmp_path/'c.csv', '--vocabulary',
            small_world/'concepts.csv', '--dataset', 'folder',
            '--dataset-path', imgs, '--clip-model', CLIP, '--top-k', 5)
    one_line(r, f'{imgs}: 1 image file names are not UTF-8', 'caf\\udce9.png')
    assert 'image features' not in r.stderr                                    # before the features


# --- the last rough edges: the API's k, an address that is none, a cache folder that cannot be one

def test_the_api_refuses_a_k_that_is_not_a_whole_number(tmp_path):
    from searle.api import ComposedRetriever
    from searle.clip import build_clip
    from PIL import Image
    for i, c in enumerate(('red', 'blue', 'green')):
        Image.new('RGB', (32, 32), c).save(tmp_path/f'{i}.png')
    r = ComposedRetriever(build_clip('tiny'), cache_dir=tmp_path/'cache',
                          device='cpu').index(tmp_path)
    for k in ('5', 2.5, True, 0):
        with pytest.raises(ValueError, match=r'k=.*expected a whole number of results, at least 1'):
            r.search(tmp_path/'0.png', 'is red', k=k, method='image+text')
    assert len(r.search(tmp_path/'0.png', 'is red', k=2, method='image+text')) == 2

def test_an_address_that_is_no_address_is_refused_by_the_parser():
    r = run('searle-app', '--host', '999.1.1.1')
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr[-2000:]
    assert ("--host: expected an address of this machine (127.0.0.1, 0.0.0.0, ::1, a name), got "
            "'999.1.1.1'") in r.stderr

def _two_images(folder):
    from PIL import Image
    folder.mkdir()
    for c in ('red', 'blue'): Image.new('RGB', (32, 32), c).save(folder/f'{c}.png')
    return folder

def test_a_cache_folder_that_cannot_be_one_names_the_option(tmp_path):
    (tmp_path/'file').write_text('x'); gal = _two_images(tmp_path/'gal')
    r = run('searle-query', gal/'red.png', 'is blue', '--gallery', gal, '--method', 'image+text',
            '--cache-dir', tmp_path/'file'/'c')
    line = one_line(r, '--cache-dir', 'nothing can be written below it')
    assert 'Traceback' not in r.stderr, line

def test_a_home_where_no_cache_folder_can_be_names_the_option(tmp_path):
    ("No --cache-dir, and HOME a file: the default cache folder cannot be made; say which option "
     "sets it.")
    (tmp_path/'home').write_text('x')
    env = {**ENV, 'HOME': str(tmp_path/'home')}; env.pop('SEARLE_CACHE_DIR', None)
    gal = _two_images(tmp_path/'gal')
    r = run('searle-query', gal/'red.png', 'is blue', '--gallery', gal, '--method', 'image+text',
            env=env)
    one_line(r, '--cache-dir', str(tmp_path/'home'), 'nothing can be written below it')
