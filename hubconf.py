"""torch.hub entry point, as the original code offers it:

    phi, encode_with_pseudo_tokens = torch.hub.load('searle-dev/searle', 'searle', backbone='ViT-B/32')

returns SEARLE's phi network with the authors' released weights and the function that encodes prompts in which
`$` stands for phi's pseudo token (`encode_with_pseudo_tokens(clip_model, tokens_or_prompts, pseudo_tokens)`)."""
dependencies = ['torch', 'clip']


def searle(backbone:str='ViT-B/32', # the CLIP backbone of the release: 'ViT-B/32' (SEARLE) or 'ViT-L/14' (SEARLE-XL)
           cache_dir=None, # where the released weights are (default ~/.cache/searle, else torch.hub's checkpoints/)
           device=None): # `None`: CUDA when available, else CPU
    "phi with the released weights of `backbone` (eval mode), and `encode_with_pseudo_tokens`."
    from pathlib import Path
    import torch
    from searle.clip import encode_with_pseudo_tokens
    from searle.phi import PHI_RELEASES, load_phi, phi_release_path
    by_clip = {v['clip']: k for k, v in PHI_RELEASES.items()}
    if backbone not in by_clip: raise ValueError(f"no released SEARLE weights for backbone {backbone!r}; expected one of {sorted(by_clip)}")
    path, url = phi_release_path(by_clip[backbone], cache_dir)
    hub_copy = Path(torch.hub.get_dir())/'checkpoints'/path.name  # where the original's entry point downloads them
    try:
        if cache_dir is None and not path.is_file() and hub_copy.is_file(): return load_phi(hub_copy, device), encode_with_pseudo_tokens
        return load_phi(by_clip[backbone], device, cache_dir), encode_with_pseudo_tokens
    except FileNotFoundError:
        raise FileNotFoundError(f"the released SEARLE weights for {backbone} are not on this machine and could not be downloaded: "
                                f"put the file from {url} at {path}" + (f" (or at {hub_copy})" if cache_dir is None else '')) from None
