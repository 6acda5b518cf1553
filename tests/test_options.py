"""The command-line rules as a user meets them: every option hyphenated and stated in --help, values
checked by the parser in one line, and commands that start without loading torch."""
import configparser, shutil, sys
import pytest, torch
import searle
from conftest import REPO, run, sh

def commands() -> list[str]:
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(REPO/'settings.ini')
    return [line.split('=')[0].strip() for line in cfg['DEFAULT']['console_scripts'].split()
            if line.strip()]

def _cmd(name):
    ("The console script, or the same command through Python when this checkout's scripts are not "
     "installed yet.")
    import shutil
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-c',
                              f"from searle.cli import {name.replace('-', '_')} as f; f()"]

def test_help_shows_hyphenated_options():
    out = sh('searle-validate', '--help')
    for opt in ('--dataset', '--dataset-path', '--clip-model', '--eval-type', '--out',
                '--preprocess', '--tokens', '--phi-checkpoint'):
        assert opt in out
    r = run('searle-validate', '--dataset', 'circo')
    assert r.returncode != 0 and '--dataset-path' in r.stderr

def test_every_command_states_its_rules():
    from searle import cli
    names = commands()
    assert len(names) >= 9
    for name in names:
        f = getattr(cli, name.replace('-', '_'))
        for a in f.parser()._actions:
            assert a.help, f'{name}: {a.option_strings or a.dest} has no help'
        r = run(name, '--version'); assert r.stdout == f'{name} {searle.__version__}\n', r.stdout
        h = ' '.join(run(name, '--help').stdout.split())
        for opt in ('--quiet', '--log-level', '--version', '--pdb'): assert opt in h, (name, opt)
        assert ('--k ' not in h
                and '_' not in ' '.join(s for a in f.parser()._actions
                                        for s in a.option_strings[:1])), name

def test_commands_import_neither_torch_nor_clip():
    code = ("import sys, searle.cli; print(sorted(m for m in ('torch', 'clip', 'transformers') if "
            "m in sys.modules))")
    assert run(sys.executable, '-c', code).stdout.strip() == '[]'

@pytest.mark.parametrize('args,needle', [
    (('searle-oti', 'c.csv', 'p.json', '--dataset', 'circo', '--dataset-path', '.', '--steps',
      '-5'), "expected an integer >= 1, got '-5'"),
    (('searle-validate', '--dataset', 'circo', '--dataset-path', '.', '--device', 'gpu'),
     'expected cpu, cuda or cuda:N'),
    (('searle-validate', '--dataset', 'imagenet', '--dataset-path', '.'),
     "invalid choice: 'imagenet'"),
    (('searle-train-phi', 't', 'c', 'p', '--dataset', 'folder', '--dataset-path', '.', '--dropout',
      '1'), 'a number in [0, 1)'),
    (('searle-demo', '--precision', 'fp8'), "invalid choice: 'fp8'"),
    (('searle-validate', '--dataset-path', '.'), 'the following arguments are required: --dataset'),
])
def test_the_parser_refuses_bad_values_in_one_line(args, needle):
    r = run(*args)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and needle in r.stderr, r.stderr

@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_cuda_without_a_gpu_is_one_line():
    r = run('searle-demo', '--device', 'cuda')
    assert (r.returncode == 2 and r.stderr.count('\n') == 1
            and 'torch sees 0 CUDA devices' in r.stderr)

def test_query_and_app_help_state_their_options():
    for name, opts in (('searle-query',
                        ('--gallery', '--top-k', '--method', '--clip-model', '--phi', '--json')),
                       ('searle-app',
                        ('--gallery', '--clip-model', '--phi', '--port', '--host', '--cache-dir'))):
        out = sh(*_cmd(name), '--help')
        assert all(o in out for o in opts), (name, out)
