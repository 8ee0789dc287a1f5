"""`pytest -p volt.dropin.pytest_plugin`: run a Lightning test suite (or tests of a Lightning project) on volt.

Lightning's module names resolve to volt in the test process from the moment pytest loads this plugin, before any
test module is imported, and in the processes tests start (as under `volt run`, see volt/dropin/run.py).
"""
from volt.dropin import install
from volt.dropin.run import prepare_child_processes

install()
prepare_child_processes()
