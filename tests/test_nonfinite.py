"""A NaN or inf pseudo token (a diverged fp16 run) spoils its own prompt only: the trimmed encoder
gives CLIP's own 77-token result row by row, non-finite rows included, for every CLIP family."""
import pytest, torch
from searle.clip import build_clip, encode_with_pseudo_tokens, backbone

@pytest.mark.parametrize('spec', ['tiny', 'open_clip:tiny', 'hf:tiny'])
def test_trimmed_equals_untrimmed_with_non_finite_tokens(spec):
    m = build_clip(spec)
    v = torch.randn(4, backbone(m).width, generator=torch.Generator().manual_seed(0)) * 0.02
    v[0, 1], v[3, 2] = float('nan'), float('-inf')
    prompts = ['a photo of $', 'a photo of $ that is red', 'a photo of a $',
               'a photo of $ that is red']
    with torch.no_grad():
        fast, ref = (encode_with_pseudo_tokens(m, prompts, v),
                     encode_with_pseudo_tokens(m, prompts, v, trim=False))
    assert fast.isnan().any(1).tolist() == [True, False, False, True] == ref.isnan().any(1).tolist()
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0, equal_nan=True)
