"""Startup of the Python processes that Lightning's tests start while `run.py` runs the suite (ddp_spawn ranks,
subprocesses): they unpickle test functions, so they import Lightning's test files, which need the stand-ins of
`lightning_suite_shims.py` as the pytest process does. The pytest process sets VOLT_LIGHTNING_SUITE_CHILD for them;
volt's own startup file (volt/dropin/boot/sitecustomize.py, first on PYTHONPATH) runs this one after itself."""
import os

if os.environ.get("VOLT_LIGHTNING_SUITE_CHILD") == "1":
    import lightning_suite_shims  # noqa: F401
