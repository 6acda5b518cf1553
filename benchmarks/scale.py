"""Full-size dry runs: placeholder folders at the real sizes, the real commands with a tiny CLIP,
time and peak RSS per stage.

No one here has the benchmark images, but their sizes are known. This builds placeholder folders
(8 x 8 JPEGs) at those sizes and runs the commands a user types on them, each in its own process,
measuring its wall time and its peak resident memory (the child's own ru_maxrss, from os.wait4):
  CIRCO val, the COCO 2017 unlabeled gallery (123,403 images): searle-validate (features extracted
    and cached), the same again (must reuse the feature cache), searle-validate with OTI tokens,
    searle-submit on the test split;
  ImageNet1K test (100,000 images): searle-concepts (a 100,000 x 250 concept table: written),
    reading that table back, searle-oti over 3,125 batches of 32 (a few steps each: sharding and
    merge), and searle-train-phi for one epoch (its data loading: features, tokens, table, phrases).
The CIRCO annotations are the real ones from ../shared/data when present (their ids are always in
the gallery), else synthetic. `--scale` multiplies every size (0.05 runs in minutes on two cores);
the printed ratio is each stage's time and peak RSS; peak RSS per image says whether a stage's
memory grows only with what it must hold (features, tokens, one chunk).
Usage: python benchmarks/scale.py [--scale 1.0] [--out DIR] [--circo-gallery 123403]
                                  [--imagenet 100000] [--vocabulary 1000] [--phrases 256]
                                  [--oti-steps 2] [--keep]
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from searle.clip import build_clip, save_clip, save_pseudo_tokens
from searle.core import load_json, save_json
from searle.data import write_placeholder_images
from searle.phrases import save_phrases

REPO = Path(__file__).resolve().parents[1]
SHARED_CIRCO = REPO.parent / 'shared' / 'data' / 'circo' / 'annotations'
ENV = {**os.environ, 'SEARLE_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
       'PYTHONPATH': f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
ROWS = []


def popen_rusage(cmd):
    "Run `cmd`; (returncode, stdout, stderr, wall s, peak RSS MiB) of that child alone."
    t = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], env=ENV, stdout=open(os.devnull, 'w'),
                         stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    return (os.waitstatus_to_exitcode(status), p.stderr.read(), time.perf_counter() - t,
            ru.ru_maxrss / 1024)


def run(name, *cmd, n=None):
    rc, err, dt, rss = popen_rusage(cmd)
    if rc != 0: raise SystemExit(f'{name} failed ({rc}):\n{err[-3000:]}')
    ROWS.append((name, dt, rss, n))
    print(f'{name:<44} {dt:8.1f} s  {rss:8.0f} MiB' + (f'  ({n:,} images)' if n else ''),
          flush=True)


def circo_folder(root:Path, n_gallery:int, rng) -> tuple[list, list]:
    ("CIRCO's layout: annotations (real when present), an image_info file of n_gallery ids, "
     "placeholder images.")
    (root/'annotations').mkdir(parents=True)
    if (SHARED_CIRCO/'val.json').is_file():
        for s in ('val', 'test'):
            shutil.copy(SHARED_CIRCO/f'{s}.json', root/'annotations'/f'{s}.json')
    else:  # 220 val and 800 test queries in the real format
        ids = rng.sample(range(1, 600_000), 2000)
        val = [{'id': i, 'reference_img_id': ids[i], 'target_img_id': ids[1000 + i],
                'gt_img_ids': [ids[1000 + i]], 'relative_caption': 'is red',
                'shared_concept': 'a car', 'semantic_aspects': ['addition']} for i in range(220)]
        test = [{'id': i, 'reference_img_id': ids[220 + i], 'relative_caption': 'is blue',
                 'shared_concept': 'a dog'} for i in range(800)]
        save_json(val, root/'annotations'/'val.json')
        save_json(test, root/'annotations'/'test.json')
    val, test = (load_json(root/'annotations'/f'{s}.json') for s in ('val', 'test'))
    ids = {q['reference_img_id'] for q in val + test} | {g for q in val for g in q['gt_img_ids']}
    while len(ids) < n_gallery: ids.add(rng.randrange(1, 1_000_000))
    images = [{'id': i, 'file_name': f'{i:012d}.jpg'} for i in sorted(ids)]
    save_json({'images': images},
              root/'COCO2017_unlabeled'/'annotations'/'image_info_unlabeled2017.json', indent=None)
    write_placeholder_images([root/'COCO2017_unlabeled'/'unlabeled2017'/im['file_name']
                              for im in images])
    return val, test


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--scale', type=float, default=1.0,
                    help='multiply every size (default 1: the real sizes)')
    ap.add_argument('--circo-gallery', type=int, default=123_403,
                    help="CIRCO's gallery: COCO 2017 unlabeled")
    ap.add_argument('--imagenet', type=int, default=100_000, help='ImageNet1K test images')
    ap.add_argument('--vocabulary', type=int, default=1000,
                    help='concepts (the real 20,931 only cost text features)')
    ap.add_argument('--phrases', type=int, default=256, help='phrases per concept (the paper: 256)')
    ap.add_argument('--top-k', type=int, default=250,
                    help='concepts per image in the table (the paper: 250)')
    ap.add_argument('--oti-steps', type=int, default=2,
                    help='OTI steps per batch (the point is sharding and merge)')
    ap.add_argument('--out', default=None,
                    help='work folder (default: a temporary one, removed unless --keep)')
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    n_circo, n_inet = (max(1, round(a.circo_gallery * a.scale)),
                       max(256, round(a.imagenet * a.scale)))
    work = Path(a.out or tempfile.mkdtemp(prefix='searle-scale-'))
    work.mkdir(parents=True, exist_ok=True)
    rng, g = random.Random(0), torch.Generator().manual_seed(0)
    try:
        t = time.perf_counter()
        model = build_clip('tiny', seed=0)
        save_clip(model, work/'clip.pt'); W = model.token_embedding.weight.shape[1]
        val, test = circo_folder(work/'CIRCO', n_circo, rng)
        n_circo = len(load_json(work/'CIRCO'/'COCO2017_unlabeled'/'annotations'
                                /'image_info_unlabeled2017.json')['images'])
        inet = [work/'ImageNet1K'/'test'/f'ILSVRC2012_test_{i:08d}.JPEG'
                for i in range(1, n_inet + 1)]
        write_placeholder_images(inet)
        concepts = [f'concept{i:05d}' for i in range(a.vocabulary)]
        (work/'vocab.csv').write_text('LabelName,DisplayName\n' + ''.join(f'/m/{i},{c}\n' for i,
                                                                          c in enumerate(concepts)))
        words = 'runs on the beach under a cloudy sky near some small houses with red roofs'.split()
        save_phrases({c: [f'a photo of {c} that ' + ' '.join(rng.sample(words, 6))
                          for _ in range(a.phrases)] for c in concepts}, work/'phrases.json')
        refs = sorted({str(q['reference_img_id']) for q in val} | {str(q['reference_img_id'])
                                                                   for q in test})
        save_pseudo_tokens(work/'tokens.pt', refs, 0.02 * torch.randn(len(refs), W, generator=g))
        print(f'scale {a.scale}: CIRCO gallery {n_circo:,} images, ImageNet {n_inet:,} images, '
              f'vocabulary {a.vocabulary:,} x {a.phrases} '
              f'phrases; folders written in {time.perf_counter() - t:.0f} s '
              f'({torch.get_num_threads()} threads)\n')
        print(f"{'stage':<44} {'time':>10}  {'peak RSS':>12}")
        clip, c = work/'clip.pt', work/'CIRCO'
        run('baseline: start-up (import searle, torch, CLIP)', sys.executable, '-c',
            'import searle.cli, searle.phi, searle.oti')
        common = ('--dataset', 'circo', '--dataset-path', c, '--clip-model', clip, '--cache-dir',
                  work/'cache', '--no-progress')
        run('CIRCO val: features + validate (image+text)', 'searle-validate', *common,
            '--eval-type', 'image+text', '--out', work/'v1', n=n_circo)
        n_cache = len(list((work/'cache').glob('features-*.pt')))
        run('CIRCO val: second run (feature cache)', 'searle-validate', *common, '--eval-type',
            'image+text', '--out', work/'v2', n=n_circo)
        reused = len(list((work/'cache').glob('features-*.pt'))) == n_cache
        run('CIRCO val: validate with OTI tokens', 'searle-validate', *common, '--tokens',
            work/'tokens.pt', '--out', work/'v3', n=n_circo)
        run('CIRCO test: submit with OTI tokens', 'searle-submit', *common, '--tokens',
            work/'tokens.pt', '--out', work/'s', n=n_circo)
        i = ('--dataset', 'imagenet', '--dataset-path', work/'ImageNet1K', '--clip-model', clip)
        run(f'ImageNet: concept table {n_inet:,} x {a.top_k} (write)', 'searle-concepts', '--out',
            work/'table.csv', *i, '--vocabulary', work/'vocab.csv',
            '--top-k', a.top_k, '--cache-dir', work/'cache', n=n_inet)
        mb = (work/'table.csv').stat().st_size / 2**20
        run('ImageNet: concept table (read back)', sys.executable, '-c',
            "from searle.concepts import read_concept_table; t = "
            f"read_concept_table({str(work/'table.csv')!r}); assert len(t) == {n_inet}", n=n_inet)
        nb = -(-n_inet // 32)
        run(f'ImageNet: OTI, {nb:,} batches x {a.oti_steps} steps + merge', 'searle-oti',
            work/'table.csv', work/'phrases.json', *i, '--steps', a.oti_steps, '--out', work/'oti',
            '--cache-dir', work/'cache', '--no-progress', n=n_inet)
        shards = len(list((work/'oti'/'shards').glob('batch-*.pt'))) if (work/'oti'
                                                                         /'shards').is_dir() else 0
        run('ImageNet: phi, data loading + 1 epoch', 'searle-train-phi',
            work/'oti'/'oti_pseudo_tokens.pt', work/'table.csv', work/'phrases.json',
            *i, '--epochs', 1, '--out', work/'phi', '--cache-dir', work/'cache', '--no-progress',
            n=n_inet)
        print(f'\nsecond CIRCO run reused the feature cache: {reused} (no new cache file); concept '
              f'table {mb:.0f} MiB on disk; '
              f'OTI shards left after the merge: {shards}')
        base_t, base_rss = ROWS[0][1], ROWS[0][2]
        print(f'ratio: second CIRCO run / first = {ROWS[2][1] / ROWS[1][1]:.2f} (both include the '
              f'{base_t:.0f} s start-up; '
              f'times on shared cores are noisy at small scales)')
        print('peak RSS above start-up, per image: '
+ '; '.join(f'{r[0]}: {max(r[2] - base_rss, 0) * 1024 / r[3]:.1f} KiB'
                                                               for r in ROWS[1:]))
    finally:
        if not a.keep and a.out is None: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
