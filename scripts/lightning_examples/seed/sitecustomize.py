"""Seeds torch's global random generator when a Python process starts, for the examples that do not seed
themselves (the examples runner puts this folder on PYTHONPATH with LIGHTNING_EXAMPLES_SEED set, in both runs): the
same seed gives the same random data and initial weights on volt and on Lightning, as `seed_everything` would."""
import os

if os.environ.get("LIGHTNING_EXAMPLES_SEED"):
    import torch

    torch.manual_seed(int(os.environ["LIGHTNING_EXAMPLES_SEED"]))
