"""Execute every notebook top to bottom as a reader's Jupyter would (`jupyter nbconvert
--execute`), not only through nbdev_test: GPU cells must skip with a line on a CPU, and no cell may
depend on a flag. 90_reproduce is left out (it needs the real data and weights). Two notebooks at a
time, one thread each; the executed copies go to a temporary folder."""
import os, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {'90_reproduce.ipynb'}

def execute(nb:Path, out:Path) -> tuple[str, int, float, str]:
    t0 = time.time()
    r = subprocess.run(['jupyter', 'nbconvert', '--to', 'notebook', '--execute', '--output-dir',
                        str(out), '--ExecutePreprocessor.timeout=1200', str(nb)],
                       capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return nb.name, r.returncode, time.time() - t0, r.stderr[-3000:]

if __name__ == '__main__':
    nbs = sorted(p for p in (ROOT/'nbs').glob('*.ipynb')
                 if not p.name.startswith('_') and p.name not in SKIP)
    with tempfile.TemporaryDirectory() as out, ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: execute(p, Path(out)), nbs))
    for name, rc, s, err in results:
        print(f'{name}: {"ok" if rc == 0 else "FAILED"} in {s:.0f} s'
              + ('' if rc == 0 else f'\n{err}'))
    failed = [r for r in results if r[1]]
    if failed: sys.exit(f'{len(failed)} notebooks failed under jupyter nbconvert --execute')
    print(f'{len(nbs)} notebooks execute top to bottom under jupyter nbconvert --execute')
