"""Bad input fails first and in one line, through the commands as a user types them: outputs and
inputs checked before any work, broken files named, Ctrl-C saying what was kept, and a rerun after a
failed start."""
import json, signal, subprocess, time
import pytest, torch
from searle import world
from searle.clip import save_pseudo_tokens
from searle.core import save_tensors
from conftest import ENV, run, one_line_error

@pytest.fixture(scope='module')
def root(stage_world): return stage_world

def test_outputs_and_inputs_are_checked_before_any_work(root, tmp_path):
    (tmp_path/'file').write_text('x')
    base = ('searle-validate', '--dataset', 'circo', '--eval-type', 'image+text', '--clip-model',
            world.world_clip_path())
    one_line_error(run(*base, '--dataset-path', root, '--out', tmp_path/'file'), '--out',
                   'is a file; expected a folder')
    one_line_error(run(*base, '--dataset-path', root, '--out', tmp_path/'file'/'run'),
                   'nothing can be written below it')
    # a wrong dataset folder is reported before CLIP (here a name that would need a download) is
    # loaded
    one_line_error(run('searle-validate', '--dataset', 'circo', '--dataset-path', tmp_path/'nope',
                       '--clip-model', 'ViT-L/14', '--eval-type', 'image+text', '--out',
                       tmp_path/'v'), 'annotations/val.json')
    one_line_error(run('searle-concepts', '--out', tmp_path, '--dataset', 'circo', '--dataset-path',
                       root), 'is a folder; expected a file')
    one_line_error(run('searle-phrases', '--out', tmp_path/'p.json', '--model', tmp_path/'gpt'),
                   'no model folder there')
    assert not (tmp_path/'v').exists()

def test_train_phi_checks_its_validation_set_first(root, tmp_path):
    save_pseudo_tokens(tmp_path/'t.pt', ['a'], torch.zeros(1, 8))
    (tmp_path/'c.csv').write_text('x'); (tmp_path/'p.json').write_text('{}')
    r = run('searle-train-phi', tmp_path/'t.pt', tmp_path/'c.csv', tmp_path/'p.json', '--dataset',
            'folder', '--dataset-path', root/'COCO2017_unlabeled', '--val-path', tmp_path/'no_cirr',
            '--out', tmp_path/'phi')
    one_line_error(r, 'cap.rc2.val.json')
    assert 'image features' not in r.stderr and not (tmp_path/'phi').exists()

def test_offline_phrase_generation_is_one_line(root, tmp_path):
    one_line_error(run('searle-phrases', '--out', tmp_path/'p.json', '--vocabulary',
                       root/'concepts.csv', '--model', 'EleutherAI/gpt-neo-125m'),
                   'could not load a causal language model', code=1)

def test_non_finite_tokens_are_refused(root, tmp_path):
    names = [q['reference_img_id'] for q in json.loads((root/'annotations'/'val.json').read_text())]
    t = torch.zeros(len(names), 16); t[1, 3] = float('nan')
    # as a diverged run of other code writes
    save_tensors({'names': [str(n) for n in names], 'tokens': t}, tmp_path/'nan.pt')
    one_line_error(run('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--tokens',
                       tmp_path/'nan.pt', '--clip-model', world.world_clip_path(), '--out',
                       tmp_path/'v'), 'nan.pt', '1 of', 'not finite', str(names[1]))

def test_broken_annotations_name_the_entry(root, tmp_path):
    bad = tmp_path/'CIRCO'; (bad/'annotations').mkdir(parents=True)
    (bad/'COCO2017_unlabeled').symlink_to(root/'COCO2017_unlabeled')
    ann = json.loads((root/'annotations'/'val.json').read_text()); del ann[2]['relative_caption']
    (bad/'annotations'/'val.json').write_text(json.dumps(ann))
    one_line_error(run('searle-validate', '--dataset', 'circo', '--dataset-path', bad,
                       '--eval-type', 'image+text', '--clip-model', world.world_clip_path(),
                       '--out', tmp_path/'v'), 'entry 2', f"id {ann[2]['id']}",
                   "'relative_caption'")

def test_oti_progress_quiet_and_a_rerun_after_a_failed_start(root, stage_files, tmp_path):
    args = ('searle-oti', stage_files/'concepts.csv', '--dataset', 'circo', '--dataset-path', root,
            '--clip-model', world.world_clip_path(), '--out', tmp_path/'oti')
    (tmp_path/'none.json').write_text(json.dumps({'format': 'searle-phrases', 'settings': {},
                                                  'phrases': {}}))
    one_line_error(run(args[0], args[1], tmp_path/'none.json', *args[2:], '--steps', 7),
                   'has usable phrases')
    # the failed start's config does not block the corrected rerun
    assert (tmp_path/'oti'/'config.json').is_file()
    r = run(args[0], args[1], stage_files/'phrases.json', *args[2:], '--steps', 20, '--batch-size',
            4)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ('\r' not in r.stderr and '\x1b' not in r.stderr and 'OTI steps of 2 batches' in r.stderr
            and '(100%)' in r.stderr)
    r = run(args[0], args[1], stage_files/'phrases.json', *args[2:], '--steps', 20, '--batch-size',
            4, '--quiet')
    assert r.returncode == 0 and r.stderr == '', r.stderr

def test_ctrl_c_says_what_was_kept(root, stage_files, tmp_path):
    p = subprocess.Popen(['searle-oti', str(stage_files/'concepts.csv'),
                          str(stage_files/'phrases.json'), '--dataset', 'circo',
                          '--dataset-path', str(root), '--clip-model', str(world.world_clip_path()),
                          '--steps', '100000', '--out', str(tmp_path/'oti')],
                         stderr=subprocess.PIPE, text=True, env=ENV,
                         # Ctrl-C as in a terminal: a run from a backgrounded shell (`make test &`)
                         # inherits SIGINT ignored, and Python would then never see it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not (tmp_path/'oti'/'config.json').is_file() and time.time() - t0 < 120: time.sleep(0.2)
    time.sleep(1); p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("searle-oti: interrupted; finished batches are kept "
                                            f"in {tmp_path/'oti'}/shards; the same command resumes")
