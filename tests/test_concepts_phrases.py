"""Concepts and phrases, beyond what 03_concepts and 04_phrases test: the templates' text, every
rank of the concept table, resuming a table, the real Open Images vocabulary, phrase generation with
a tiny GPT-Neo built offline (counts, resume, atomic writes, kill-and-resume, an offline hub name),
the restricted pickle loader's harder cases and a concept's case."""
import csv, dataclasses, json, os, pickle, signal, subprocess, sys, textwrap, time, zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from searle.clip import ImageList, build_clip, extract_features, make_preprocess, model_fingerprint
from searle.concepts import (TEMPLATES, associate_images, concept_features, load_vocabulary,
                             read_vocabulary, run_concepts, vocabulary_key)
import searle.phrases as sp
from searle.phrases import (PhraseConfig, build_tiny_gpt_neo, generate_phrases, load_phrases,
                            make_pseudo_phrase)
from searle.runs import Job

@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    ("Tiny models on shared cores: two torch threads can be 40x slower than one here "
     "(oversubscription).")
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CPU = Job(device='cpu', progress=False)  # how the tests' stages run
WORDS = ['Dog', 'Cat', 'Red car', 'Beach', 'Ducks, geese and swans', 'Sofa', 'Tree', 'Lighthouse']


# ---------------------------------------------------------------- concepts

def test_templates_are_the_originals_24():
    ("03_concepts checks the ensemble with these templates; here their text (the original's typo "
     "kept).")
    assert len(TEMPLATES) == 24 and TEMPLATES[5] == 'An illustrations of a {}', TEMPLATES[:6]


def _images(folder: Path, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        arr = (torch.rand(24 + 4 * i, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        p = folder / f'img_{i}.png'; Image.fromarray(arr).save(p); paths.append(p)
    return ImageList([f'img_{i}' for i in range(n)], paths)


def test_association_rows_are_the_top_k_by_cosine_similarity(tmp_path):
    "03_concepts checks the table's layout and that its rows are `top_concepts`; here every rank."
    m = build_clip('tiny', seed=0)
    ims = _images(tmp_path / 'imgs')
    cf = concept_features(m, WORDS, progress=False)
    k = 6
    table = associate_images(ims, WORDS, cf, tmp_path / 'table.csv', m,
                             make_preprocess('targetpad', 32), k=k, chunk_size=2, progress=False)
    _, feats = extract_features(m, ims, make_preprocess('targetpad', 32), progress=False)
    sims = F.normalize(feats, dim=-1) @ cf.T
    expected = [[WORDS[j] for j in row] for row in sims.topk(k).indices.tolist()]
    assert list(table.values()) == expected, (list(table.values()), expected)


def test_run_concepts_on_features_resumes_and_keeps_order(tmp_path):
    vocab = tmp_path / 'v.csv'
    with open(vocab, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['LabelName', 'DisplayName'])
        w.writerows([[f'/m/{i}', c] for i, c in enumerate(WORDS)])
    m = build_clip('tiny', seed=0)
    names = [f'n{i}' for i in range(7)]
    feats = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    full = run_concepts(tmp_path / 'a.csv', (names, feats), vocabulary=vocab, clip_model=m, k=3,
                        job=CPU)
    part = run_concepts(tmp_path / 'b.csv', (names[:3], feats[:3]), vocabulary=vocab, clip_model=m,
                        k=3, job=CPU)
    rest = run_concepts(tmp_path / 'b.csv', (names, feats), vocabulary=vocab, clip_model=m, k=3,
                        job=CPU)
    assert part == {n: full[n] for n in names[:3]} and rest == full and list(rest) == names
    assert (tmp_path / 'a.csv').read_text() == (tmp_path / 'b.csv').read_text()
    with pytest.raises(ValueError, match='k=4'):
        run_concepts(tmp_path / 'b.csv', (names, feats), vocabulary=vocab, clip_model=m, k=4,
                     job=CPU)


def test_resume_refuses_rows_made_by_another_model_vocabulary_or_preprocessing(tmp_path):
    m, pre = build_clip('tiny', seed=0), make_preprocess('targetpad', 32)
    ims = _images(tmp_path / 'imgs', n=4)
    cf = concept_features(m, WORDS, progress=False)
    out = tmp_path / 't.csv'
    # the second chunk fails: one part is left
    good = ims.paths[2].read_bytes(); ims.paths[2].write_bytes(b'not a png')
    with pytest.raises(Exception, match='img_2.png'):
        associate_images(ims, WORDS, cf, out, m, pre, k=3, chunk_size=2, progress=False)
    ims.paths[2].write_bytes(good)
    rec = json.loads((tmp_path / 't.csv.config.json').read_text())
    assert (rec['stage'], rec['config'], rec['inputs']) == ('concepts',
                                                            {'top_k': 3, 'preprocess': repr(pre),
                                                             'precision': 'fp32'},
                                                             # fp32: the CPU's default
                                                             {'vocabulary': vocabulary_key(WORDS)})
    assert rec['clip']['clip_fingerprint'] == model_fingerprint(m)
    other = build_clip('tiny', seed=1)
    with pytest.raises(ValueError,
                       match=r"^`--clip-model`: this file was made with '[0-9a-f]+', now "
                             r"'[0-9a-f]+'; use another `--out` \("):
        associate_images(ims, WORDS, concept_features(other, WORDS, progress=False), out, other,
                         pre, k=3, chunk_size=2, progress=False)
    with pytest.raises(ValueError,
                       match=r"^`--preprocess`: this file was made with .*; use another `--out` "
                             r"\(also `inputs.vocabulary`\)"):
        associate_images(ims, WORDS[:-1], cf[:-1], out, m, make_preprocess('clip', 32), k=3,
                         chunk_size=2, progress=False)
    # refused runs wrote nothing
    assert [p.name for p in (tmp_path / 't.csv.parts').iterdir()] == ['part-000000.csv']
    resumed = associate_images(ims, WORDS, cf, out, m, pre, k=3, chunk_size=2, progress=False)
    assert resumed == associate_images(ims, WORDS, cf, tmp_path / 'fresh.csv', m, pre, k=3,
                                       progress=False)
    with pytest.raises(ValueError, match=r"`--clip-model`"):  # the finished table keeps its record
        associate_images(ims, WORDS, cf, out, other, pre, k=3, progress=False)


def test_real_open_images_vocabulary(shared_dir, tmp_path):
    src = shared_dir / 'data' / 'openimages' / 'oidv7-class-descriptions.csv'
    if not src.is_file(): pytest.skip('no Open Images vocabulary in ../shared')
    vocab = read_vocabulary(src)
    assert (len(vocab) == 20931 and vocab[:2] == ["'Nduja", '10 cane']
            and 'Ducks, geese and swans' in vocab)
    # the download path, without the network: a file:// URL, checksum verified, cached
    got = load_vocabulary(cache_dir=tmp_path, url=src.resolve().as_uri())
    # the cached copy is the file
    assert got == vocab and (tmp_path / src.name).read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match='does not match'):
        load_vocabulary(cache_dir=tmp_path / 'x', url=src.resolve().as_uri(), sha256='0' * 64)
    assert not any((tmp_path / 'x').iterdir())


# ---------------------------------------------------------------- phrases

CORPUS = ['a photo of a dog that runs on the beach.',
          'a photo of a red car that is parked\nin the street...',
          'a photo of a cat that sleeps on the sofa',
          'a photo of a tree that grows near the lighthouse'] * 4


@pytest.fixture(scope='module')
def tiny_lm(tmp_path_factory):
    return build_tiny_gpt_neo(tmp_path_factory.mktemp('lm') / 'tiny-gpt-neo', CORPUS, seed=0)


def test_generation_counts_postprocessing_and_resume(tiny_lm, tmp_path, monkeypatch):
    concepts = ['dog', 'red car', 'cat', ' dog', 'tree', 'lighthouse', 'sofa']
    out = tmp_path / 'phrases.json'
    five = PhraseConfig(num_return_sequences=5, seed=7)
    run = lambda cs, cfg=five: generate_phrases(tiny_lm, cs, out, cfg, batch_size=2, device='cpu',
                                                save_every_s=0, progress=False)
    first = run(concepts[:4])
    assert sorted(first) == ['cat', 'dog', 'red car']
    assert all(len(v) == 5 for v in first.values())
    for c, ps in first.items():
        assert all(p.startswith(f'a photo of {c} that') for p in ps)
        assert not any('\n' in p or '..' in p for p in ps)
    obj = json.loads(out.read_text())
    assert obj['format'] == 'searle-phrases' and obj['settings']['num_return_sequences'] == 5
    assert (obj['settings']['temperature'] == 0.5 and obj['settings']['max_length'] == 35
            and obj['settings']['top_k'] == 50)

    seen = []
    real = sp.sample_phrases
    monkeypatch.setattr(sp, 'sample_phrases', lambda m, t, cs,
                        cfg: seen.append(list(cs)) or real(m, t, cs, cfg))
    both = run(concepts)
    # done concepts skipped
    assert sorted(c for b in seen for c in b) == ['lighthouse', 'sofa', 'tree']
    assert {c: both[c] for c in first} == first
    fresh = generate_phrases(tiny_lm, concepts, tmp_path / 'fresh.json', five, batch_size=2,
                             device='cpu', progress=False)
    assert fresh == both  # resuming samples exactly what one uninterrupted run samples
    seen.clear()
    assert run(concepts) == both and seen == []  # nothing left: no batch sampled
    with pytest.raises(ValueError, match='no_repeat_ngram_size'):
        run(concepts + ['beach'], dataclasses.replace(five, no_repeat_ngram_size=3))


def test_interrupted_write_leaves_the_previous_file(tiny_lm, tmp_path, monkeypatch):
    out = tmp_path / 'phrases.json'
    three = PhraseConfig(num_return_sequences=3)
    generate_phrases(tiny_lm, ['dog', 'cat'], out, three, device='cpu', progress=False)
    before = out.read_bytes()
    real_dump = json.dump
    def dies_mid_write(obj, f, **kw):
        f.write(json.dumps(obj)[:50]); f.flush()  # half a file on disk, then the process "dies"
        raise KeyboardInterrupt('killed while writing')
    monkeypatch.setattr(json, 'dump', dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        generate_phrases(tiny_lm, ['dog', 'cat', 'tree', 'sofa'], out, three, device='cpu',
                         save_every_s=0, progress=False)
    monkeypatch.setattr(json, 'dump', real_dump)
    assert out.read_bytes() == before
    # no half-file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ['phrases.json',
                                                          'phrases.json.config.json']
    assert sorted(load_phrases(out)) == ['cat', 'dog']


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from searle.phrases import PhraseConfig, generate_phrases
    concepts = [f'thing{i}' for i in range(int(sys.argv[3]))]
    generate_phrases(sys.argv[1], concepts, sys.argv[2],
                     PhraseConfig(num_return_sequences=2, seed=3), batch_size=1, device='cpu',
                     save_every_s=0, progress=False)
""")


def test_killed_generation_leaves_valid_json_and_rerun_completes(tiny_lm, tmp_path):
    out, n = tmp_path / 'phrases.json', 80
    script = tmp_path / 'gen.py'; script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_lm), str(out), str(n)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not out.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.01)
        time.sleep(0.2)  # a few more batches and saves
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    partial = load_phrases(out)  # valid JSON in our format, whatever the moment of the kill
    assert 0 < len(partial) < n, f'the kill left {len(partial)} of {n} concepts: not mid-run'
    done = generate_phrases(tiny_lm, [f'thing{i}' for i in range(n)], out,
                            PhraseConfig(num_return_sequences=2, seed=3), batch_size=1,
                            device='cpu', save_every_s=30, progress=False)
    assert len(done) == n and all(len(v) == 2 for v in done.values())
    assert {c: done[c] for c in partial} == partial and load_phrases(out) == done


def test_offline_hub_name_fails_fast_and_clearly(tmp_path):
    t = time.time()
    with pytest.raises(OSError, match='no-such-org/no-such-model'):
        sp.load_causal_lm('no-such-org/no-such-model', device='cpu')
    took = time.time() - t
    assert took < 30, f'the offline failure took {took:.0f} s (>= 30 s)'


# ---------------------------------------------------------------- released pickle, filter

class _Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def test_restricted_loader_refuses_code_at_the_top_and_two_members(tmp_path):
    ("04_phrases reads the released pickle and zip and refuses code inside the dict; here a pickle "
     "that is code itself, in a file and in a zip, and a zip of two pickles.")
    marker = tmp_path / 'pwned'
    (tmp_path / 'evil_top.pkl').write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(pickle.UnpicklingError):
        load_phrases(tmp_path / 'evil_top.pkl')
    with zipfile.ZipFile(tmp_path / 'evil.zip', 'w') as z:
        z.writestr('x/concept_to_phrases.pkl', pickle.dumps(_Evil(marker)))
    with pytest.raises(pickle.UnpicklingError):
        load_phrases(tmp_path / 'evil.zip')
    assert not marker.exists()  # nothing ran
    released = {'Dog': ['a photo of Dog that runs'], 'Car': ['a photo of Car that is red']}
    with zipfile.ZipFile(tmp_path / 'two.zip', 'w') as z:
        z.writestr('a.pkl', pickle.dumps(released)); z.writestr('b.pkl', pickle.dumps(released))
    with pytest.raises(ValueError, match='exactly one'):
        load_phrases(tmp_path / 'two.zip')


def test_a_concept_is_found_only_in_its_own_case():
    ("04_phrases tests the filter and the pseudo phrase; here a pseudo phrase of a lower-case "
     "mention.")
    with pytest.raises(ValueError, match="'Car'"):
        make_pseudo_phrase('a photo of a car that is blue', 'Car')
