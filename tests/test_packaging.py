"""What a newcomer meets before the method: the build system, the licence in the wheel, an editable
install used from the folder that holds the clone, the CI workflow, the README's install notes."""
import os, subprocess, sys, zipfile
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = ({k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} |
       {'PIP_NO_INDEX': '1', 'PIP_DISABLE_PIP_VERSION_CHECK': '1'})

def sh(*args, cwd=None, timeout=600):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=ENV,
                       timeout=timeout)
    assert r.returncode == 0, f'{args}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}'
    return r.stdout + r.stderr

def test_an_editable_install_imports_from_the_folder_that_holds_the_clone(tmp_path):
    # `git clone ... searle`
    (tmp_path/'work').mkdir(); clone = tmp_path/'work'/'searle'; clone.symlink_to(REPO)
    sh(sys.executable, '-m', 'venv', '--system-site-packages', tmp_path/'venv')
    py = tmp_path/'venv'/'bin'/'python'
    out = sh(py, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '-e', clone)
    # the build system is declared (pyproject.toml)
    assert 'setup.py develop' not in out, out[-2000:]
    code = 'from searle import ComposedRetriever; import searle; print(searle.__file__)'
    got = sh(py, '-c', code, cwd=tmp_path/'work')
    found = Path(got.strip().splitlines()[-1]).resolve()
    assert found == (REPO/'searle'/'__init__.py').resolve(), got

def test_the_wheel_holds_the_licence_and_the_world(tmp_path):
    pip = (sys.executable, '-m', 'pip')
    sh(*pip, 'wheel', '--no-deps', '--no-build-isolation', '-w', tmp_path, REPO)
    names = zipfile.ZipFile(next(tmp_path.glob('searle-*.whl'))).namelist()
    lic = [n for n in names if n.endswith('/LICENSE') and '.dist-info/' in n]
    text = zipfile.ZipFile(next(tmp_path.glob('searle-*.whl'))).read(lic[0]).decode() if lic else ''
    assert 'Apache License' in text, names[-10:]
    assert {'searle/assets/world/clip.pt', 'searle/assets/world/phi.pt',
            'searle/assets/world/gpt/config.json'} <= set(names)
    r = subprocess.run(['git', 'check-ignore', '-q', 'build/lib/searle/__init__.py'], cwd=REPO)
    assert r.returncode == 0, 'build/ (left by building a wheel) is not ignored by git'

def test_ci_runs_the_readme_test_command_and_the_readme_says_how_to_get_cpu_torch():
    lines = (REPO/'.github'/'workflows'/'test.yaml').read_text().splitlines()
    steps = [l.strip() for l in lines if l.strip().startswith('run:')]
    assert 'run: .ci/run' in steps, steps
    readme = (REPO/'README.md').read_text()
    cpu = 'pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu'
    assert cpu in readme
