"""The stages as commands on a small offline world, as a user chains them: phrases, concepts, OTI,
validation; CIRCO predictions scored offline; searle-query over a folder."""
import json, os, shutil, sys
from pathlib import Path
import pytest
from searle import world
from conftest import run, sh, one_line_error

@pytest.fixture(scope='module')
def root(small_world):
    return small_world(3, 80, 12, 6, 0)

def test_score_an_oracle_and_refuse_bad_files(root, tmp_path):
    val = json.loads((root/'annotations'/'val.json').read_text())
    gallery = [im['id']
               for im in json.loads((root/'COCO2017_unlabeled'/'annotations'
                                     /'image_info_unlabeled2017.json').read_text())['images']
               if im['in_gallery']]
    preds = {str(q['id']): ([str(g) for g in q['gt_img_ids']]
                            + [str(g) for g in gallery
                               if g not in q['gt_img_ids']][:50 - len(q['gt_img_ids'])])
             for q in val}
    (tmp_path/'p.json').write_text(json.dumps(preds))
    m = json.loads(sh('searle-score', tmp_path/'p.json', '--dataset-path', root))
    assert (all(m[f'map@{k}'] == 100 for k in (5, 10, 25, 50))
            and all(m[f'recall@{k}'] == 100 for k in (5, 10, 25, 50)))
    assert any(k.startswith('semantic_map@10/') for k in m)
    bad = dict(preds); first = next(iter(bad)); bad[first] = [bad[first][0]] * 2 + bad[first][2:]
    (tmp_path/'dup.json').write_text(json.dumps(bad))
    r = run('searle-score', str(tmp_path/'dup.json'), '--dataset-path', str(root))
    assert r.returncode != 0 and 'more than once' in r.stderr and 'Traceback' not in r.stderr
    del bad[first]; (tmp_path/'missing.json').write_text(json.dumps(bad))
    r = run('searle-score', str(tmp_path/'missing.json'), '--dataset-path', str(root))
    assert r.returncode != 0 and first in r.stderr

def test_the_stages_chain_as_commands(root, tmp_path):
    clip_file, gpt = world.world_clip_path(), world.world_gpt_path()
    sh('searle-phrases', '--out', tmp_path/'phrases.json', '--vocabulary', root/'concepts.csv',
       '--model', gpt, '--num-return-sequences', 4)
    sh('searle-concepts', '--out', tmp_path/'concepts.csv', '--dataset', 'circo', '--dataset-path',
       root, '--vocabulary', root/'concepts.csv', '--clip-model', clip_file, '--top-k', 20)
    # images decoded by two worker processes: the same table
    sh('searle-concepts', '--out', tmp_path/'workers.csv', '--dataset', 'circo', '--dataset-path',
       root, '--vocabulary', root/'concepts.csv', '--clip-model', clip_file, '--top-k', 20,
       '--num-workers', 2)
    assert (tmp_path/'workers.csv').read_text() == (tmp_path/'concepts.csv').read_text()
    sh('searle-oti', tmp_path/'concepts.csv', tmp_path/'phrases.json', '--dataset', 'circo',
       '--dataset-path', root, '--clip-model', clip_file, '--steps', 30,
       '--out', tmp_path/'oti', '--no-progress')
    sh('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--eval-type', 'oti',
       '--tokens', tmp_path/'oti'/'oti_pseudo_tokens.pt',
       '--clip-model', clip_file, '--out', tmp_path/'val', '--no-progress')
    m = json.loads((tmp_path/'val'/'metrics.json').read_text())
    assert {'map@5', 'map@50', 'recall@5', 'recall@50'} <= set(m), sorted(m)
    assert all(0 <= v <= 100 for v in m.values()), m
    cfg = json.loads((tmp_path/'val'/'config.json').read_text())
    assert cfg['config']['dataset'] == 'circo' and 'oti_pseudo_tokens.pt' in cfg['config']['method']
    sh('searle-validate', '--dataset', 'circo', '--dataset-path', root, '--eval-type', 'image+text',
       '--clip-model', clip_file, '--out', tmp_path/'base', '--no-progress')
    assert json.loads((tmp_path/'base'/'metrics.json').read_text()).keys() == m.keys()

def test_score_takes_exactly_fifty_ids(root, tmp_path):
    val = json.loads((root/'annotations'/'val.json').read_text())
    preds = {str(q['id']): [str(q['gt_img_ids'][0])] for q in val}
    (tmp_path/'p.json').write_text(json.dumps(preds))
    one_line_error(run('searle-score', tmp_path/'p.json', '--dataset-path', root), 'lists 1 ids',
                   'exactly 50')

def _cmd(name):
    ("The console script, or the same command through Python when this checkout's scripts are not "
     "installed yet.")
    import shutil
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-c',
                              f"from searle.cli import {name.replace('-', '_')} as f; f()"]

def test_query_a_world_folder_as_json_and_as_text(root, tmp_path):
    gallery = root/'COCO2017_unlabeled'/'unlabeled2017'
    attrs = json.loads((root/'world.json').read_text())['images']
    # changes the colour: 'is <colour>'
    q = json.loads((root/'annotations'/'val.json').read_text())[1]
    ref = gallery/f"{q['reference_img_id']:012d}.png"
    args = [ref, q['relative_caption'], '--gallery', gallery, '--k', 5, '--cache-dir',
            tmp_path/'cache', '--device', 'cpu', '--no-progress']
    hits = json.loads(sh(*_cmd('searle-query'), *args, '--json'))
    assert ([h['rank'] for h in hits] == [1, 2, 3, 4, 5]
            and all(set(h) == {'rank', 'name', 'score'} for h in hits))
    assert (all((gallery/h['name']).is_file() for h in hits)
            and ref.name not in [h['name'] for h in hits])
    assert [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
    top, want = attrs[str(int(Path(hits[0]['name']).stem))], attrs[str(q['target_img_id'])]
    # phi's rank 1 is a ground truth
    assert {k: top[k] for k in world.ASPECTS} == {k: want[k] for k in world.ASPECTS}
    lines = sh(*_cmd('searle-query'), *args, '--method', 'image+text').splitlines()
    assert (len(lines) == 5 and lines[0].split()[0] == '1'
            and lines[0].split()[2] in {h['name'] for h in hits} | set(os.listdir(gallery)))
    r = run(*_cmd("searle-query"), ref, "is red", "--gallery", tmp_path/"nowhere")
    assert r.returncode != 0 and 'expected a folder' in r.stderr and 'Traceback' not in r.stderr
