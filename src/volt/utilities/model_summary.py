"""Lightning's import path for the model summary helpers."""
from volt.callbacks.model_summary import Summary as ModelSummary
from volt.callbacks.model_summary import get_human_readable_count, summarize

__all__ = ["ModelSummary", "get_human_readable_count", "summarize"]
