"""Every stage as a long job, through the commands as a user types them: a rerun into the same --out
with one setting changed fails in one line of one format (the setting, the recorded value, the new
one); every config.json records the searle version and the CLIP; of two runs into one --out at once,
the second says the folder is in use."""
import json, os, signal, subprocess, time
import pytest
import searle
from searle import world
from conftest import ENV, one_line_error, run

@pytest.fixture(scope='module')
def root(stage_world): return stage_world

FORMAT = "`{}`: this {} was made with {}, now {}; use another `--out`"

def refused(r, setting, was, now, what='folder'):
    "The one-line error of the resume rule, naming `setting`, the recorded value and the new one."
    last = one_line_error(r)
    assert FORMAT.format(setting, what, was, now) in last, last
    return last

def recorded(path, clip=True):
    "A run's config.json: it records its stage, the searle version and its CLIP (phrases: None)."
    rec = json.loads(path.read_text())
    assert rec['searle_version'] == searle.__version__ and 'stage' in rec and 'config' in rec, rec
    if clip:
        assert rec['clip']['clip'] == str(world.world_clip_path()), rec['clip']
        assert rec['clip']['clip_weights'] and rec['clip']['clip_family'] == 'openai', rec['clip']
    else: assert rec['clip'] is None, rec
    return rec

@pytest.fixture(scope='module')
def unlabeled(root, stage_files, tmp_path_factory):
    "OTI tokens and a concept table of the world's image folder (phi's training images)."
    d, imgs = tmp_path_factory.mktemp('unlabeled'), root/'COCO2017_unlabeled'
    clip = world.world_clip_path()
    r = run('searle-concepts', '--out', d/'concepts.csv', '--dataset', 'folder',
            '--dataset-path', imgs, '--vocabulary', root/'concepts.csv', '--clip-model', clip,
            '--top-k', 20, '--quiet')
    assert r.returncode == 0, r.stderr[-2000:]
    r = run('searle-oti', d/'concepts.csv', stage_files/'phrases.json', '--dataset', 'folder',
            '--dataset-path', imgs, '--clip-model', clip, '--steps', 3, '--out', d/'oti', '--quiet')
    assert r.returncode == 0, r.stderr[-2000:]
    return d, imgs

def test_phrases_rerun_with_another_setting(root, stage_files):
    "stage_files made its phrases with --num-return-sequences 4."
    r = run('searle-phrases', '--out', stage_files/'phrases.json',
            '--vocabulary', root/'concepts.csv',
            '--model', world.world_gpt_path(), '--num-return-sequences', 5)
    refused(r, '--num-return-sequences', 4, 5, 'file')
    rec = recorded(stage_files/'phrases.json.config.json', clip=False)
    assert rec['stage'] == 'phrases' and rec['config']['num_return_sequences'] == 4

def test_concepts_rerun_with_another_setting(root, stage_files):
    "stage_files made its table in the CPU's precision, fp32."
    r = run('searle-concepts', '--out', stage_files/'concepts.csv', '--dataset', 'circo',
            '--dataset-path', root, '--vocabulary', root/'concepts.csv',
            '--clip-model', world.world_clip_path(), '--top-k', 20, '--precision', 'bf16')
    refused(r, '--precision', "'fp32'", "'bf16'", 'file')
    assert recorded(stage_files/'concepts.csv.config.json')['config']['top_k'] == 20

def test_oti_rerun_with_another_setting(root, stage_files, tmp_path):
    args = ('searle-oti', stage_files/'concepts.csv', stage_files/'phrases.json',
            '--dataset', 'circo', '--dataset-path', root, '--clip-model', world.world_clip_path(),
            '--out', tmp_path/'oti', '--quiet')
    r = run(*args, '--steps', 5, '--batch-size', 4); assert r.returncode == 0, r.stderr[-2000:]
    refused(run(*args, '--steps', 6, '--batch-size', 4), '--steps', 5, 6)
    assert recorded(tmp_path/'oti'/'config.json')['config']['steps'] == 5

def test_phi_rerun_with_another_setting(stage_files, unlabeled, tmp_path):
    d, imgs = unlabeled
    args = ('searle-train-phi', d/'oti'/'oti_pseudo_tokens.pt', d/'concepts.csv',
            stage_files/'phrases.json', '--dataset', 'folder', '--dataset-path', imgs,
            '--clip-model', world.world_clip_path(), '--epochs', 1, '--batch-size', 16,
            '--save-every', 1, '--out', tmp_path/'phi', '--quiet')
    r = run(*args); assert r.returncode == 0, r.stderr[-2000:]
    refused(run(*args, '--lr', '0.001'), '--lr', '0.0001', '0.001')
    rec = recorded(tmp_path/'phi'/'config.json')
    assert rec['config']['lr'] == 1e-4 and rec['inputs']['images'], rec

def test_phi_validates_on_its_val_path(root, stage_files, unlabeled, tmp_path):
    "--val-path: the command validates phi on the benchmark each epoch; the stage saves its record."
    d, imgs = unlabeled
    r = run('searle-train-phi', d/'oti'/'oti_pseudo_tokens.pt', d/'concepts.csv',
            stage_files/'phrases.json', '--dataset', 'folder', '--dataset-path', imgs,
            '--clip-model', world.world_clip_path(), '--epochs', 2, '--batch-size', 16,
            '--val-dataset', 'circo', '--val-path', root, '--missing-images', 'skip',
            '--out', tmp_path/'phi', '--quiet')
    assert r.returncode == 0, r.stderr[-2000:]
    log = json.loads((tmp_path/'phi'/'log.json').read_text())
    assert [row['epoch'] for row in log if 0 <= row.get('val/map@5', -1) <= 100] == [1, 2], log
    left = json.loads((tmp_path/'phi'/'left_out.json').read_text())
    assert left['counts'] == dict(missing_images=0, skipped_queries=0, truncated_images=0), left

def test_validation_rerun_with_another_setting(root, tmp_path):
    args = ('searle-validate', '--dataset', 'circo', '--dataset-path', root,
            '--eval-type', 'image+text', '--clip-model', world.world_clip_path(),
            '--out', tmp_path/'val', '--quiet')
    r = run(*args); assert r.returncode == 0, r.stderr[-2000:]
    r = run(*args); assert r.returncode == 0, r.stderr[-2000:]   # the same settings: run again
    refused(run(*args, '--preprocess', 'clip'), '--preprocess', "'targetpad'", "'clip'")
    assert recorded(tmp_path/'val'/'config.json')['config']['preprocess'] == 'targetpad'

def test_two_runs_into_one_folder(root, stage_files, tmp_path):
    "A run into a folder in use is refused in one line (folder, PID); a dead run's lock is taken."
    args = [str(a) for a in ('searle-oti', stage_files/'concepts.csv', stage_files/'phrases.json',
                             '--dataset', 'circo', '--dataset-path', root,
                             '--clip-model', world.world_clip_path(), '--out', tmp_path/'oti',
                             '--quiet')]
    first = subprocess.Popen(args + ['--steps', '100000'], stderr=subprocess.PIPE, text=True,
                             env=ENV)
    try:
        t0 = time.time()
        while not (tmp_path/'oti'/'config.json').is_file() and time.time() - t0 < 120:
            time.sleep(0.2)
        second = run(*args, '--steps', '100000')
        one_line_error(second, f"{tmp_path/'oti'} is in use by process {first.pid} on ",
                       'use another `--out`')
        assert first.poll() is None   # the first run is still at work, undisturbed
    finally:
        first.send_signal(signal.SIGKILL); first.communicate(timeout=60)
    assert (tmp_path/'oti'/'.lock').is_file()   # the killed run's lock file is left behind...
    again = run(*args, '--steps', 2)            # ...and taken over (no shard was made: a fresh run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path/'oti'/'oti_pseudo_tokens.pt').is_file()
    assert not (tmp_path/'oti'/'.lock').exists()              # released as the run ended

def test_one_cache_folder(monkeypatch, tmp_path):
    "SEARLE_CACHE_DIR moves every cache: the vocabulary, the released phi weights, the API's files."
    monkeypatch.setenv('SEARLE_CACHE_DIR', str(tmp_path))
    from searle.api import default_cache_dir
    from searle.concepts import OPENIMAGES_URL, load_vocabulary
    from searle.phi import phi_release_path
    assert default_cache_dir() == tmp_path and phi_release_path('searle')[0].parent == tmp_path
    (tmp_path/OPENIMAGES_URL.rsplit('/', 1)[-1]).write_text('not the vocabulary')
    with pytest.raises(ValueError, match=f"the cached vocabulary {tmp_path}/"): load_vocabulary()

def test_command_defaults_are_the_configs():
    "Each default has one source, the stage's config, shown by --help; the rule's options exist."
    import inspect
    from searle import cli, concepts, oti, phi, phrases, retrieval
    stages = ((cli.searle_oti, oti.OTIConfig(), oti.OTI_OPTIONS),
              (cli.searle_train_phi, phi.PhiConfig(), phi.PHI_OPTIONS),
              (cli.searle_phrases, phrases.PhraseConfig(), phrases.PHRASE_OPTIONS),
              (cli.searle_concepts, None, concepts.CONCEPT_OPTIONS),
              (cli.searle_validate, None, retrieval.VALIDATE_OPTIONS))
    for cmd, cfg, named in stages:
        p = cmd.parser()
        dests = {a.dest: a for a in p._actions}
        taken = [k for k, v in inspect.signature(cmd).parameters.items() if v.default is cli.CONFIG]
        assert (cfg is None) == (not taken), (cmd.__name__, taken)
        for k in taken:
            assert dests[k].default == getattr(cfg, k), (cmd.__name__, k, dests[k].default)
            assert f'default: {getattr(cfg, k)}' in ' '.join(dests[k].help.split()), dests[k].help
        assert [k for k in named if k not in dests] == [], (cmd.__name__, named)
    assert 'steps' in [a.dest for a in cli.searle_oti.parser()._actions]
