"""Ranking a CIRCO-scale gallery: `searle.retrieval.rank_gallery` + `searle.metrics` against a
per-query loop.

A gallery of 123,403 random 512-d features (CIRCO's COCO 2017 unlabeled set) and 800 queries (CIRCO
test). Each query is a noisy mean of 1-14 "ground-truth" gallery items, so mAP@K is not trivially
zero. The reference is the straightforward loop written below: one matrix-vector product and a full
sort per query, AP@K in Python (the goal's baseline). A second baseline is one [Q, N] similarity
matrix and topk, as the original code ranks: it shows what the chunked ranking costs or saves in
time and memory against plain torch. Both must return the same top-50 ids and the same mAP@K. A
matrix product and per-query vector products round differently in float32 (~1e-7), so two items
whose scores agree to that precision may come out in either order; such rows are checked in float64
and reported separately.

    python benchmarks/rank.py  # CPU, one thread (the fair setting on a shared machine)
    python benchmarks/rank.py --threads 2 --faiss  # also time the FAISS backend
"""
import argparse, os, threading, time

import torch
import torch.nn.functional as F

from searle.metrics import map_at_k, pad_ids
from searle.retrieval import rank_gallery

KS = (5, 10, 25, 50)


def rss_mb() -> float:
    "Resident memory of this process, MB (Linux)."
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


class PeakRSS:
    "Peak resident memory above the level at entry, sampled every 5 ms (buffers live far longer)."
    def __enter__(self):
        self.base = self.peak = rss_mb(); self._stop = False
        self._t = threading.Thread(target=self._watch, daemon=True); self._t.start(); return self
    def _watch(self):
        while not self._stop: self.peak = max(self.peak, rss_mb()); time.sleep(0.005)
    def __exit__(self, *exc):
        self._stop = True; self._t.join(); self.peak = max(self.peak, rss_mb())
    @property
    def extra(self): return self.peak - self.base


def make_data(n_gallery, n_queries, dim, seed):
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randn(n_gallery, dim, generator=g)
    n_gt = torch.randint(1, 15, (n_queries,), generator=g)
    gts = [torch.randint(0, n_gallery, (int(n),), generator=g).unique().tolist() for n in n_gt]
    queries = torch.stack([F.normalize(gallery[t], dim=-1).mean(0) for t in gts])
    queries = queries + 0.05 * torch.randn(n_queries, dim, generator=g)
    return gallery, queries, gts


def naive(gallery, queries, gts, k):
    "The reference: for each query, cosine similarity with every image, a full sort, AP@K by hand."
    gn = gallery / gallery.norm(dim=1, keepdim=True)
    ids, aps = [], {K: [] for K in KS}
    for q, gt in zip(queries, gts):
        sims = gn @ (q / q.norm())
        top = torch.argsort(sims, descending=True)[:k].tolist()
        ids.append(top)
        for K in KS:
            hits, score = 0, 0.0
            for rank, j in enumerate(top[:K], start=1):
                if j in gt: hits += 1; score += hits / rank
            aps[K].append(score / min(K, len(gt)))
    return torch.tensor(ids), {K: sum(v) / len(v) for K, v in aps.items()}


def one_product(gallery, queries, k):
    ("A second, stronger baseline, as the original code ranks: one [Q, N] similarity matrix in "
     "memory, then topk.")
    sims = F.normalize(queries, dim=-1) @ F.normalize(gallery, dim=-1).T  # [Q, N]
    return sims.topk(k, dim=1).indices


def package(gallery, queries, gts, k, backend='torch'):
    _, ids = rank_gallery(queries, gallery, k=k, device='cpu', backend=backend)
    gt = pad_ids(gts)
    return ids, {K: map_at_k(ids, gt, K) for K in KS}


def compare(ids_a, ids_b, gallery, queries, tol=1e-6):
    ("(identical rows, rows whose differing positions hold items with exact (float64) scores "
     "within `tol`, largest gap).")
    same = (ids_a == ids_b).all(1)
    tied, worst = 0, 0.0
    for r in (~same).nonzero().squeeze(1).tolist():
        q, pos = F.normalize(queries[r].double(), dim=0), ids_a[r] != ids_b[r]
        sa, sb = (F.normalize(gallery[ids[r][pos]].double(), dim=-1) @ q for ids in (ids_a, ids_b))
        # exact score difference of the items swapped at each differing rank
        gap = (sa - sb).abs().max().item()
        worst = max(worst, gap); tied += gap < tol
    return same.sum().item(), tied, worst


def timed(fn, *args, **kw):
    "(result, wall seconds, process CPU seconds, peak extra MB)."
    with PeakRSS() as mem:
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        dt, dc = time.perf_counter() - t, time.process_time() - c
    return out, dt, dc, mem.extra


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n-gallery', type=int, default=123_403)
    p.add_argument('--n-queries', type=int, default=800)
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--k', type=int, default=50)
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads for both (1: fair on a shared machine)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--faiss', action='store_true', help='also time the FAISS backend')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gallery, queries, gts = make_data(a.n_gallery, a.n_queries, a.dim, a.seed)
    print(f'gallery {tuple(gallery.shape)} ({gallery.numel() * 4 / 2**20:.0f} MB), {len(queries)} '
          f'queries, top-{a.k}, '
          f'{a.threads} thread(s), torch {torch.__version__}')
    package(gallery[:2000], queries[:8], gts[:8], a.k)  # warm-up
    (pid, pmap), pt, pc, pmem = timed(package, gallery, queries, gts, a.k)
    (nid, nmap), nt, nc, nmem = timed(naive, gallery, queries, gts, a.k)
    oid, ot, oc, omem = timed(one_product, gallery, queries, a.k)
    n_same, n_tied, gap = compare(pid, nid, gallery, queries)
    same_ids = n_same + n_tied == len(queries)
    same_map = all(abs(pmap[K] - nmap[K]) < 1e-9 for K in KS)
    print(f'package rank_gallery + map_at_k : {pt:7.2f} s wall {pc:7.2f} s CPU   peak extra memory '
          f'{pmem:7.1f} MB')
    print(f'naive per-query loop            : {nt:7.2f} s wall {nc:7.2f} s CPU   peak extra memory '
          f'{nmem:7.1f} MB')
    print(f'speed ratio                     : {nt / pt:7.1f}x wall  {nc / pc:5.1f}x CPU time  '
          '(goal >= 20x; on a loaded machine '
          f'CPU time is the steadier measure, load average now {os.getloadavg()[0]:.1f})')
    o_same, o_tied, _ = compare(pid, oid, gallery, queries)
    print(f'one [Q, N] product + topk       : {ot:7.2f} s wall {oc:7.2f} s CPU   peak extra memory '
          f'{omem:7.1f} MB   '
          f'ratio {ot / pt:.2f}x wall (ids same: {o_same + o_tied == len(queries)}; AP@K not '
          'included in this time)')
    print(f'same top-{a.k} ids                : {same_ids}  ({n_same}/{len(queries)} queries '
          'identical'
          + (f'; {n_tied} differ only where two items\' exact scores are within {gap:.1e} of each '
             'other, i.e. float32 rounding of one matrix product vs per-query vector products'
             if n_tied
             else '') + ')')
    print('mAP@K (%)                       : '
          + '  '.join(f'@{K} {100 * pmap[K]:.2f}/{100 * nmap[K]:.2f}'
                      for K in KS) + f'  same: {same_map}')
    if a.faiss:
        (fid, fmap), ft, fc, fmem = timed(package, gallery, queries, gts, a.k, backend='faiss')
        f_same, f_tied, _ = compare(fid, nid, gallery, queries)
        print(f'faiss IndexFlatIP               : {ft:7.2f} s wall {fc:7.2f} s CPU   peak extra '
              f'memory {fmem:7.1f} MB   '
              f'same ids: {f_same + f_tied == len(queries)} ({f_same} identical, {f_tied} '
              'tie-order only)')
    if not (same_ids and same_map): raise SystemExit('the package and the reference disagree')


if __name__ == '__main__':
    main()
