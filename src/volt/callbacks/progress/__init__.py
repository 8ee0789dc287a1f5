"""Progress bars: the ProgressBar base, TQDMProgressBar (the default) and RichProgressBar (needs `rich`)."""
from volt.callbacks.progress.progress_bar import ProgressBar
from volt.callbacks.progress.rich_progress import RichProgressBar, RichProgressBarTheme
from volt.callbacks.progress.tqdm_progress import TQDMProgressBar

__all__ = ["ProgressBar", "RichProgressBar", "RichProgressBarTheme", "TQDMProgressBar"]
