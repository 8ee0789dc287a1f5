"""Files on local disks or remote filesystems (s3://, gs://, memory://, ...) through fsspec."""
from pathlib import Path
from typing import Any, Union

import torch


def get_filesystem(path: Union[str, Path], **kwargs: Any):
    """The fsspec filesystem that holds `path` (the local one for plain paths)."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(str(path), **kwargs)
    return fs


def _load(path_or_url: Any, map_location: Any = None, weights_only: bool = True) -> Any:
    """`torch.load` from a path, URL or file object. Safe by default (`weights_only=True`): pass False only for a
    file you trust."""
    if not isinstance(path_or_url, (str, Path)):
        return torch.load(path_or_url, map_location=map_location, weights_only=weights_only)
    if str(path_or_url).startswith(("http://", "https://")):
        return torch.hub.load_state_dict_from_url(str(path_or_url), map_location=map_location,
                                                  weights_only=weights_only)
    fs = get_filesystem(path_or_url)
    with fs.open(str(path_or_url), "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=weights_only)
