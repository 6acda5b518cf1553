"""What the test files share: the environment of a command run as a user runs it (offline, one
thread), the way to run one and read its one-line error, and the small offline worlds the tests run
on (each built once)."""
import os, shutil, subprocess
from pathlib import Path
import pytest, torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
from searle.core import load_json, save_json  # noqa: E402 (after the offline switches)
from searle.data import write_placeholder_images  # noqa: E402
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
ENV = {**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
       'OMP_NUM_THREADS': '1',
       # this checkout's searle
       'PYTHONPATH': f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

def run(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    "A command as a user types it (arguments as strings), with its output captured."
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)

def sh(*args, timeout=600) -> str:
    "A command that must succeed: its standard output."
    r = run(*args, timeout=timeout)
    assert r.returncode == 0, f'{args[0]} failed:\n{r.stderr[-3000:]}'
    return r.stdout

def one_line_error(r, *needles, code=None) -> str:
    ("The command failed with a final `error:` line holding every needle, and no traceback; that "
     "line.")
    assert r.returncode != 0 and (code is None or r.returncode == code), (r.returncode,
                                                                          r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert ': error: ' in last and all(n in last for n in needles), last
    return last

def fails(*args, match:str):
    "The command failed, saying `match`, without a traceback."
    r = run(*args)
    assert r.returncode != 0 and match in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]

@pytest.fixture(scope='session')
def small_world(tmp_path_factory):
    ("`small_world(seed, n_gallery, n_queries, n_test=0, n_unlabeled=0)`: an offline world, built "
     "once per size.")
    from searle import world
    built = {}
    def make(seed:int, n_gallery:int, n_queries:int, n_test:int=0, n_unlabeled:int=0):
        key = (seed, n_gallery, n_queries, n_test, n_unlabeled)
        if key not in built:
            built[key] = world.build_world(tmp_path_factory.mktemp('world'), seed=seed,
                                           n_gallery=n_gallery, n_queries=n_queries, n_test=n_test,
                                           n_unlabeled=n_unlabeled, progress=False)
        return built[key]
    return make

@pytest.fixture(scope='session')
def shared_dir():
    "../shared beside the repository (annotations, golden values); skip when absent."
    if not (SHARED / 'SPEC.md').is_file(): pytest.skip('../shared is not present')
    return SHARED

@pytest.fixture(scope='session')
def stage_world(small_world):
    "The world the stage commands run on in several test files."
    return small_world(4, 60, 8, 0, 0)

@pytest.fixture(scope='session')
def stage_files(stage_world, tmp_path_factory):
    "Phrases and a concept table of `stage_world`, made by the commands."
    from searle import world
    d, root = tmp_path_factory.mktemp('stages'), stage_world
    assert run('searle-phrases', '--out', d/'phrases.json', '--vocabulary', root/'concepts.csv',
               '--model', world.world_gpt_path(), '--num-return-sequences', 4,
               '--quiet').returncode == 0
    assert run('searle-concepts', '--out', d/'concepts.csv', '--dataset', 'circo', '--dataset-path',
               root, '--vocabulary', root/'concepts.csv', '--clip-model', world.world_clip_path(),
               '--top-k', 20, '--quiet').returncode == 0
    return d


# --- the real benchmarks' annotation files with placeholder images

def clip_with_networks(spec:str, d:Path) -> tuple[str, dict]:
    ("A tiny CLIP of `spec`'s family saved to `d/clip.pt`; phi, LinCIR's phi and Pic2Word's "
     "network for it (random weights), each recording that CLIP: (clip file, {network: file}).")
    from searle.clip import backbone, build_clip, clip_record, load_clip, save_clip
    from searle.phi import Phi, save_phi
    from searle.lincir import save_lincir
    from searle.pic2word import Pic2Word, save_pic2word
    save_clip(build_clip(spec, seed=0), d/'clip.pt')
    model = load_clip(d/'clip.pt', device='cpu'); bb, rec = backbone(model), clip_record(model)
    save_phi(Phi(bb.dim, 4 * bb.dim, bb.width), d/'phi.pt', backbone=rec)
    save_lincir(Phi(bb.dim, 4 * bb.dim, bb.width), d/'lincir.pt', backbone=rec)
    save_pic2word(Pic2Word(bb.dim, 32, bb.width), d/'pic2word.pt', backbone=rec)
    return str(d/'clip.pt'), {n: str(d/f'{n}.pt') for n in ('phi', 'lincir', 'pic2word')}

def real_circo(shared:Path, dst:Path, split:str) -> Path:
    "The real CIRCO annotations of `split`, an image info of every image they name, placeholders."
    ann = load_json(shared/'data'/'circo'/'annotations'/f'{split}.json')
    ids = sorted({q['reference_img_id'] for q in ann} |
                 {g for q in ann for g in q.get('gt_img_ids', [])})
    save_json(ann, dst/'annotations'/f'{split}.json')
    save_json({'images': [{'id': i, 'file_name': f'{i:012d}.jpg'} for i in ids]},
              dst/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json')
    imgs = dst/'COCO2017_unlabeled'/'unlabeled2017'
    write_placeholder_images([imgs/f'{i:012d}.jpg' for i in ids])
    return dst

def real_cirr(shared:Path, dst:Path, split:str) -> Path:
    "The real CIRR annotations of `split` and a placeholder image for each image of its split."
    src = shared/'data'/'cirr'/'cirr'
    shutil.copytree(src, dst/'cirr')
    paths = load_json(src/'image_splits'/f'split.rc2.{split}.json').values()
    write_placeholder_images([dst/p for p in paths])
    return dst
