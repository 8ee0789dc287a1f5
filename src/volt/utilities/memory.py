"""Out-of-memory errors, recognised wherever they come from (Lightning's `utilities.memory` names)."""
import gc

import torch


def is_oom_error(exception: BaseException) -> bool:
    """Whether `exception` says the device or the host ran out of memory: CUDA's `OutOfMemoryError` (or the
    "CUDA out of memory" RuntimeError of older code), cuDNN's "not supported" failure that large batches cause, the
    CPU allocator's failure, or Python's `MemoryError`."""
    if isinstance(exception, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    if not isinstance(exception, RuntimeError) or len(exception.args) != 1 or not isinstance(exception.args[0], str):
        return False
    message = exception.args[0]
    return (("CUDA" in message and "out of memory" in message)
            or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in message
            or "DefaultCPUAllocator: can't allocate memory" in message)


def garbage_collection_cuda() -> None:
    """Free what an out-of-memory failure left behind: unreachable tensors, then the CUDA allocator's cache."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            torch.cuda.empty_cache()
        except RuntimeError as exception:  # freeing the cache can itself run out of memory
            if not is_oom_error(exception):
                raise
