import os
from pathlib import Path
import pytest, torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(__file__).resolve().parents[2] / 'shared'

@pytest.fixture(scope='session')
def shared_dir():
    "../shared beside the repository (annotations, golden values); skip when absent."
    if not (SHARED / 'SPEC.md').is_file(): pytest.skip('../shared is not present')
    return SHARED
