"""`--precision` as a user gives it: bad values fail first in one line, bf16 runs every stage and is
recorded, and a run refuses to resume in another precision (the offline world, written to a
temporary folder)."""
import json, os, subprocess
import pytest
from searle import world
from conftest import run, sh


@pytest.fixture(scope='module')
def root(small_world):
    return small_world(4, 40, 6, 0, 0)

@pytest.mark.parametrize('value, expected',
      [('amp', "precision 'amp' (fp16 autocast with a gradient scaler) needs a CUDA device"),
                                             ('fp16',
                                              "argument --precision: invalid choice: 'fp16'")])
def test_a_bad_precision_fails_first_in_one_line(root, tmp_path, value, expected):
    r = run('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--eval-type',
            'image-only', '--out', tmp_path/'v', '--device', 'cpu', '--precision', value)
    assert (r.returncode != 0 and r.stderr.startswith('searle-validate: error: ')
            and expected in r.stderr), r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not (tmp_path/'v').exists()   # refused before any work

def test_bf16_stages_are_recorded_and_not_resumed_in_another(root, tmp_path):
    clip_file = world.world_clip_path()
    phrases = {c: [f'a photo of {c} that is small', f'a photo of {c} on a white ground']
               for c in world.world_concepts()}
    # written here: generation is not what is tested
    (tmp_path/'phrases.json').write_text(json.dumps(phrases))
    sh('searle-concepts', '--out', tmp_path/'concepts.csv', '--dataset', 'circo', '--dataset-path',
       root, '--vocabulary', root/'concepts.csv', '--clip-model', clip_file, '--top-k', 20,
       '--precision', 'bf16')
    assert json.loads((tmp_path
                       /'concepts.csv.config.json').read_text())['config']['precision'] == 'bf16'
    oti = ['searle-oti', tmp_path/'concepts.csv', tmp_path/'phrases.json', '--dataset', 'circo',
           '--dataset-path', root, '--clip-model', clip_file, '--steps', 5, '--out', tmp_path/'oti',
           '--no-progress']
    sh(*oti, '--precision', 'bf16')
    assert json.loads((tmp_path/'oti'/'config.json').read_text())['config']['precision'] == 'bf16'
    # the default on this CPU: fp32
    r = run(*oti)
    assert (r.returncode != 0
            and "`--precision`: this folder was made with 'bf16', "
                "now 'fp32'" in r.stderr), r.stderr[-2000:]
    sh('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--eval-type', 'oti',
       '--tokens', tmp_path/'oti'/'oti_pseudo_tokens.pt',
       '--clip-model', clip_file, '--out', tmp_path/'val', '--no-progress', '--precision', 'bf16')
    assert json.loads((tmp_path/'val'/'config.json').read_text())['config']['precision'] == 'bf16'
    m = json.loads((tmp_path/'val'/'metrics.json').read_text())
    assert m and all(0 <= v <= 100 for v in m.values()), m
