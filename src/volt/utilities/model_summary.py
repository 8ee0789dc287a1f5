"""Lightning's import path for the model summary helpers."""
from volt.callbacks.model_summary import Summary as ModelSummary  # noqa: F401
from volt.callbacks.model_summary import get_human_readable_count, summarize  # noqa: F401
