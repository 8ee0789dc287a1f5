"""Run Lightning's own test suite (tests/tests_pytorch of Lightning's repository) on volt, directory by directory,
and tabulate passed/failed/errors/skipped per directory.

Lightning's tests are not part of volt: check them out anywhere outside this repository, e.g. for release 2.6.5
(with Lightning's pyproject.toml, whose pytest settings its CI uses):

    git clone --depth 1 --branch 2.6.5 https://github.com/Lightning-AI/pytorch-lightning lightning-src
    python scripts/lightning_suite/run.py lightning-src/tests/tests_pytorch results/         # every directory
    python scripts/lightning_suite/run.py lightning-src/tests/tests_pytorch results/ callbacks trainer
    python scripts/lightning_suite/run.py --table results/                                    # the table again
    python scripts/lightning_suite/run.py --table before/ after/                              # before -> after
    python scripts/lightning_suite/run.py --kinds results/                        # failures by kind, top causes
    python scripts/lightning_suite/run.py --changes before/ after/                # tests whose outcome changed
    python scripts/lightning_suite/run.py --differences results/         # each public behaviour difference left

Each directory runs in its own pytest process, as Lightning's CI runs the suite (from tests/tests_pytorch), through
volt's opt-in for test suites (`-p volt.dropin.pytest_plugin`: Lightning's module names resolve to volt) and
`lightning_suite_shims.py` (the test plumbing Lightning's conftest imports; `sitecustomize.py` gives it to the
processes tests start), with a per-test timeout (pytest-timeout). Tests that need a GPU, TPU or a standalone
multi-process launch are skipped by Lightning's own RunIf conditions. The output folder gets `<dir>.xml` (JUnit),
`<dir>.log` and `results.json` (one entry per test: directory, test id, outcome, first line of the failure).
Tests write into the checkout's tests/tests_pytorch (Lightning's conftest runs them there): run one suite at a time
per checkout. Which volt runs is whichever `import volt` finds (PYTHONPATH first).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTCOMES = ("passed", "failed", "errors", "skipped")


def targets(tests_dir: Path):
    """The suite's directories (and top-level test files), in the order the table lists them."""
    return [p.name for p in sorted(tests_dir.iterdir())
            if (p.is_dir() and any(p.rglob("test_*.py"))) or (p.is_file() and p.name.startswith("test_"))]


def run_one(tests_dir: Path, out: Path, target: str, timeout: int) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.pop("PL_RUN_STANDALONE_TESTS", None)
    command = [sys.executable, "-m", "pytest", "-p", "volt.dropin.pytest_plugin", "-p", "lightning_suite_shims",
               "-q", "--color=no", "-p", "no:cacheprovider", "--continue-on-collection-errors", f"--timeout={timeout}", f"--junitxml={out / target}.xml",
               "-o", "junit_family=xunit1", target]
    start = time.perf_counter()
    with open(out / f"{target}.log", "w") as log:
        subprocess.run(command, cwd=tests_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def first_cause(text: str):
    """The exception a failure was raised while handling, if any: `pytest.warns` around a call that fails reports
    "DID NOT WARN", but the test failed on the call's own error (often a private attribute Lightning's test reads)."""
    head, separator, _ = text.partition("During handling of the above exception")
    if separator:
        for line in head.splitlines():
            if line.startswith("E "):
                return line[1:].strip()
    return None


def read_results(out: Path):
    """One dict per test case in the JUnit files of `out`."""
    results = []
    for xml in sorted(out.glob("*.xml")):
        target = xml.stem
        for case in ElementTree.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag, name in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
                element = case.find(tag)
                if element is not None:
                    outcome = name
                    message = (element.get("message") or element.text or "").strip().splitlines()
                    message = message[0][:300] if message else ""
                    if message == "collection failure":  # the error that stopped the import is the cause
                        errors = [line[1:].strip() for line in (element.text or "").splitlines()
                                  if line.startswith("E ")]
                        message = f"{errors[-1][:250]} (collection failure)" if errors else message
                    cause = first_cause(element.text or "")
                    if cause:
                        message = f"{cause[:200]} (then: {message[:100]})"
                    break
            file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
            results.append({"dir": target, "test": f"{file}::{case.get('name')}", "outcome": outcome,
                            "message": message})
    return results


INTERNAL, MISSING, DIFFERENT = "Lightning internals", "feature not in volt", "public behaviour difference"
DELIBERATE = "deliberate difference (README: What volt does differently)"
SETUP = "not a volt failure (data, network or packages Lightning's CI provides)"
TIMEOUT = "timed out (undecided: the per-test limit on a loaded machine)"
# (pattern of the failure's first line, kind, cause); the first match decides, the rest are behaviour differences
RULES = [
    (r"No checkpoints found in folder .*legacy/checkpoints", SETUP, "legacy checkpoints (tests/legacy, not in git)"),
    (r"'SummaryWriter' object has no attribute 'assert_\w+'", INTERNAL,
     "patches torch.utils.tensorboard.SummaryWriter, the writer Lightning's TensorBoardLogger picks when tensorboard "
     "is installed (volt's logger writes with tensorboardX)"),
    (r"zombie thread: <Thread\((wandb-|Otel\w+)", SETUP,
     "the installed wandb (0.31) keeps its own threads running after wandb.init (and OpenTelemetry's exporter threads "
     "that the tracking libraries start); Lightning 2.6.6 leaves the same ones"),
    (r"volt does not provide \S+: (Lightning's internal machinery|an internal helper|Lightning's test-suite helpers"
     r"|Lightning's hook mixin)", INTERNAL, "imports a private Lightning module or helper"),
    (r"(has no|does not have the) attribute '_\w+'|cannot import name '_\w+'|no attribute 'connectors'", INTERNAL,
     "reads or patches a private attribute (trainer._data_connector, ...)"),
    (r"<module 'lightning\.[\w.]+' .*> does not have the attribute '(os|sys|shutil|subprocess|time|torch)'", INTERNAL,
     "patches a module that Lightning's code imported, as its namespace holds it (mock.patch('...fsdp.shutil'))"),
    (r"'(FitLoop|EvalLoop|EvaluationLoop|PredictionLoop|_\w+Loop)' object has no attribute", INTERNAL,
     "Lightning's loop objects (fit_loop.epoch_loop, progress trackers, loop state_dict)"),
    (r"'other' is not a valid TrainerFn", INTERNAL,
     "sets trainer.state.fn to a value that is no TrainerFn (volt refuses it) to drive Lightning's private launcher "
     "(strategy._launcher._collect_rank_zero_results)"),
    (r"ModelCheckpoint\._link_checkpoint\(\) got an unexpected keyword argument", INTERNAL,
     "calls ModelCheckpoint._link_checkpoint(trainer, filepath=, linkpath=), Lightning's private static method (volt "
     "links at the checkpoint point with volt.checkpoint.atomic_symlink: relative links, replacing a file or link, a "
     "copy where links fail)"),
    (r"'str' object has no attribute 'world_size'", INTERNAL,
     "calls EarlyStopping._log_info, a private static method (volt's takes other arguments)"),
    (r"'\w*Strategy' object has no attribute|'\w*Accelerator' object has no attribute", INTERNAL,
     "Lightning's strategy/accelerator internals"),
    (r"has no attribute 'launchers' \(volt does not provide it\)", INTERNAL,
     "patches Lightning's launcher classes (strategies.launchers)"),
    (r"rich_progress'? (has no|.*does not have the) attribute '[A-Z]\w+'", INTERNAL,
     "patches rich's classes where Lightning's rich_progress module imported them"),
    (r"module 'lightning\.\S+' has no attribute '(cuda|mps|xla|cpu)'", INTERNAL,
     "patches Lightning's device-count helpers (conftest's mock_cuda_count)"),
    (r"accelerator='gpu' \(or gpus=N\) asks for a CUDA GPU, but none is available", INTERNAL,
     "fakes CUDA devices by patching Lightning's device-count helpers (conftest's cuda_count_N fixtures); without "
     "them Lightning refuses accelerator='gpu' on this machine too"),
    (r"Expected 'set_rng_state_all' to have been called once", INTERNAL,
     "counts calls to a mocked torch.cuda.set_rng_state_all, which Lightning's isolate_rng makes with an empty list "
     "where CUDA is absent (a no-op); volt restores CUDA states where CUDA was initialized"),
    (r"'Results' object is not subscriptable", INTERNAL,
     "reads trainer._results (Lightning's logger connector's result collection) by its internal keys"),
    (r"import error in lightning\.\S+: No module named '[^']+'; '[^']+' is n", INTERNAL,
     "patches a module that a Lightning module imported (e.g. profilers.simple.math.fsum)"),
    (r"filesystem tracking backend .* is in maintenance mode", SETUP,
     "the installed mlflow (3.17) refuses its file store without MLFLOW_ALLOW_FILE_STORE (Lightning 2.6.6 fails the same"
     " way; its CI pins an older mlflow)"),
    (r"urlopen error|jsonnet package is required", SETUP,
     "downloads MNIST, or needs jsonnet (no network, jsonnet not installed here)"),
    (r"volt does not provide \S+: (?P<cause>.+?)(;|\. |\.$|$)", MISSING, None),
    (r"has no attribute '(\w*(HPU|TPU|XLA|hpu|tpu|xla)\w*|transformer_engine|bitsandbytes|migration|upgrade_checkpoint)'"
     r" \(volt does not provide it\)", MISSING,
     "HPU/TPU/XLA, bitsandbytes, TransformerEngine, 1.x checkpoint migration: names of features volt does not have"),
    (r"module 'lightning\.fabric' has no attribute '\w+' \(volt does not provide it\)", MISSING,
     "Fabric is not part of volt"),
    (r"has no attribute 'model_parallel' \(volt does not provide it\)", MISSING, "volt has no tensor-parallel strategy"),
    (r"Should not import standalone package", MISSING,
     "1.x checkpoint migration's legacy-import patching (the test asserts no pytorch_lightning module is loaded)"),
    (r"Expected a BaseException type, but got '_NotProvided'", MISSING,
     "SIGTERMException (volt stops on SIGTERM with TrainingStopped after saving last.ckpt)"),
    (r"mode='sequential' is not supported", MISSING, "CombinedLoader(mode='sequential')"),
    (r"Timeout \(>", TIMEOUT, "mostly ddp_spawn runs, each rank importing torch, volt and the test file"),
    (r"'generator' object has no attribute '(iterators|_consumed)'", INTERNAL,
     "reads CombinedLoader._iterator, Lightning's private mode iterator (its iterators, _consumed, __getstate__)"),
    (r"'volt\.[\w.]*' == 'lightning\.py", DELIBERATE,
     "LightningCLI records volt's class paths (volt.callbacks.DeviceStatsMonitor) where Lightning's test expects "
     "lightning.pytorch's: jsonargparse derives them from the class's __module__ (the README says why volt keeps its "
     "own; a lightning.pytorch.* config loads under volt run)"),
    (r"Regex pattern did not match\.", DIFFERENT, "raises the same exception type, with other wording"),
    (r"Regex pattern did not match any of", DIFFERENT, "warns, with other wording"),
    (r"DID NOT RAISE", DIFFERENT, "accepts what Lightning refuses"),
    (r"DID NOT WARN", DIFFERENT, "no warning where Lightning warns"),
    (r"RankFailedError|ProcessRaisedException", DIFFERENT, "a multi-process (ddp/ddp_spawn) run fails"),
    (r"would start its other ranks by running this pytest command again", INTERNAL,
     "swaps Lightning's launcher (DDPStrategy._configure_launcher, a _MultiProcessingLauncher subclass) to run "
     "strategy='ddp' in-process; volt's 'ddp' starts its ranks by running the command line (pytest) again"),
    (r"zombie thread: <Thread\(volt-watchdog", INTERNAL,
     "Lightning's conftest fails a test that leaves a new thread without a stop() method: volt's DDP watchdog, one "
     "daemon thread per process shared by every Trainer in it and closed at exit (the test's own checks passed)"),
]


# (pattern of the test id, reason): tests that fail because volt behaves differently on purpose; each reason is one
# the README's "What volt does differently" gives. The test id decides here, not the message, so that a new failure
# of the same test with another cause still shows as a difference.
DELIBERATE_TESTS = [
    (r"strategies/test_fsdp\.py::test_forbidden_precision_raises$",
     "volt's FSDPStrategy (FSDP2) takes any precision plugin, e.g. HalfPrecision('bf16-true'): FSDP2 shards a module "
     "in whatever dtype it has, so there is no separate FSDPPrecision to require"),
    (r"strategies/test_fsdp\.py::test_hybrid_shard_configuration\[",
     "FSDPStrategy(sharding_strategy='HYBRID_SHARD') works without an auto_wrap_policy, process_group or device_mesh: "
     "volt wraps every child module by default and shards within each node, replicating across nodes (FSDP1's "
     "manual-wrapping restriction does not apply to FSDP2); FSDP1's process_group tuple is not taken: use device_mesh"),
    (r"strategies/test_fsdp\.py::test_save_checkpoint_unknown_state_dict_type$",
     "an unknown state_dict_type is refused when the strategy is made, not at the first checkpoint save (Lightning "
     "raises there, possibly hours into the run)"),
    (r"test_loops\.py::test_restart(_from_last)?(_with_val)?_parity",
     "checkpoints hold RNG states (uint8 tensors) for exact resume; the test takes the norm of every tensor's "
     "difference"),
    (r"loggers/test_all\.py::test_loggers_pickle_all\[CometLogger\]",
     "CometLogger(online=False) saves an offline experiment (an archive, written by comet's thread), as Lightning's "
     "documentation says; Lightning 2.6 disables the experiment and saves nothing"),
    (r"loggers/test_mlflow\.py::test_mlflow_logger_dirs_creation",
     "MLFlowLogger opens the tracking store (importing mlflow, 1 to 3 s) when the run is first used, not when the "
     "logger is constructed, so the store's folders appear then"),
    (r"test_cluster_integration\.py::test_ranks_available_automatic_strategy_selection\[trainer_kwargs[01]\]",
     "a WORLD_SIZE from the launcher that contradicts devices x num_nodes is refused when the Trainer is built; "
     "Lightning ignores it, and its ranks then wait at the rendezvous until the timeout (30 minutes)"),
    (r"test_amp\.py::test_optimizer_amp_scaling_support_in_step_method",
     "volt unscales the gradients of fused optimizers before their step too (torch's GradScaler supports it), so "
     "gradient clipping works with them; Lightning refuses clipping there (the test's optimizer is a Mock)"),
    (r"test_data_connector\.py::test_replace_distributed_sampler\[",
     "the loaders the Trainer shows hold their batch sampler inside volt's resumable sampler (exact mid-epoch "
     "resume), which forwards batch_size, drop_last and sampler; isinstance/type checks see the wrapper"),
    (r"test_training_epoch_loop\.py::test_resume_mid_epoch_warning|test_restore\.py::test_restarting_mid_epoch_raises_"
     r"warning\[\w+-True\]",
     "a resume inside an epoch is exact (map-style data: skipped at the sampler; iterables: their state_dict(), else "
     "a replay of the consumed batches), so Lightning's warning that it gives unreliable results would be false"),
    (r"test_loops\.py::test_fit_loop_save_and_restore_dataloaders\[<lambda>-"
     r"(False-batches_before2|True-batches_before5)",
     "a fit stopped inside an epoch and continued goes on with that epoch exactly: loaders without state_dict() are "
     "replayed to where they stood, not restarted from their first batch"),
    (r"test_loops\.py::test_workers_are_shutdown\[False-",
     "a non-persistent loader's worker processes end when its pass over the data ends (torch's own behaviour); "
     "Lightning keeps them until the next pass starts or the fit ends"),
    (r"test_rich_progress_bar\.py::test_rich_progress_bar_(update_counts|correct_value_epoch_end)\b",
     "RichProgressBar reads the progress-bar metrics (a device-to-host copy) and calls rich's Progress.update (a few "
     "microseconds) only when it redraws, at most 5 times a second and at each epoch's and validation's end, not "
     "after every batch; the values shown and the bars' counts are Lightning's (the tests count calls per batch)"),
    (r"test_hooks\.py::test_trainer_model_hook_system_fit(\[|_no_val_and_resume_max_(epochs|steps)$)",
     "volt's checkpoints carry a `volt_version` key beside Lightning's, so that a checkpoint from an incompatible "
     "volt fails loudly; the hook calls, their order and the other checkpoint keys are Lightning's (the test compares "
     "the whole checkpoint dict passed to on_save_checkpoint/on_load_checkpoint)"),
    (r"(test_profiler\.py::test_profile_callbacks|test_datamodules\.py::test_datamodule_hooks_are_profiled)$",
     "volt calls, and so profiles, a callback's or datamodule's hook only where it overrides the base class's empty "
     "one (hooks nobody implements cost no call); Lightning's profile also lists the empty hooks it calls"),
    (r"test_lr_finder\.py::test_lr_candidates_between_min_and_max$",
     "lr_find(min_lr=1.0, max_lr=1e-8) (a swapped range) is an error naming both values in volt; Lightning sweeps the "
     "learning rate downwards, where the range test's suggestion (the steepest fall of the loss) means nothing"),
    (r"test_hparams\.py::test_collect_init_arguments\[AggSubClassBoringModel\]$",
     "checkpoints hold no code, so an nn.Module hyperparameter (here a loss) is not saved in them (save_hyperparameters "
     "warns, as Lightning, to ignore it; its weights are in the state dict) and load_from_checkpoint builds it from "
     "the class default or a keyword argument; Lightning pickles the module, which needs weights_only=False"),
    (r"test_cli\.py::test_lightning_cli_help$",
     "Trainer(compile=...) is a volt extension of the Python API, kept out of LightningCLI's options and configs so "
     "that a config.yaml volt writes loads under Lightning (the test expects an option for every Trainer argument)"),
    (r"test_cli\.py::test_lightning_cli_print_config$",
     "the header comment of a config volt writes names the framework that wrote it (`# volt==0.1.0`); the settings "
     "and the class paths as the user wrote them are Lightning's"),
    (r"test_model_checkpoint\.py::test_model_checkpoint_no_extraneous_invocations$",
     "under DDP each checkpoint holds every rank's RNG and loop state, gathered to rank 0 (serialized with torch.save) "
     "so that a resumed run continues exactly; the test counts torch.save calls per rank (the files are written once "
     "per save, by rank 0, and state_dict runs once per save, as in Lightning)"),
    (r"test_throughput_monitor\.py::test_throughput_monitor_fit_with_validation$",
     "a StopIteration raised in a hook is an error in volt, where Lightning's training loop takes it for the end of "
     "the data and ends the epoch silently (the test's mocked clock runs out of values in the last validation)"),
]


# (pattern of the test id, reason): tests of a feature volt does not have whose failure message does not say so
# (a bare `assert False`).
MISSING_TESTS = [
    (r"test_registry\.py::test_available_accelerators_in_registry$",
     "expects the 'tpu' accelerator in the registry (volt trains on CPU, CUDA and MPS; TPU/XLA is not supported)"),
]


# (pattern of the test id, reason): tests of Lightning internals whose first failure line is too general to rule on
# by its message alone (an IndexError, a None), named here one by one.
INTERNAL_TESTS = [
    (r"loops/test_loops\.py::test_loop_state_on_complete_run$",
     "compares loops.fit_loop key by key with Lightning's own progress counters (its loop bookkeeping, e.g. "
     "scheduler_progress); volt writes the counters Lightning's resume reads, beside its own exact cursor"),
    (r"core/test_metric_result_integration\.py::test_result_collection_reload\[",
     "reads trainer.fit_loop._results (Lightning's result collection) through a property of the test's model"),
    (r"strategies/test_ddp\.py::test_(set_timeout|device_id_passed_for_cuda_devices_pytorch)$",
     "wires the module in by hand (trainer.strategy.connect(model)), expects setup_environment() to create the "
     "process group, and reads _get_process_group_backend() and _timeout (volt passes the timeout, and a GPU's device_id, "
     "to init_process_group when the ranks rendezvous)"),
    (r"strategies/test_single_device\.py::test_strategy_pickle$",
     "reads strategy._lightning_optimizers, the private list Lightning's Strategy.optimizers setter fills (in volt "
     "`trainer.optimizers = [...]` rewraps what self.optimizers() returns)"),
    (r"loggers/test_all\.py::test_logger_initialization\[(CSV|TensorBoard|Wandb|Comet)Logger\]$",
     "its setup callback asserts the logger's private `_experiment` in a spawned rank (Lightning creates each "
     "logger's experiment before the setup hooks, volt when it is first used; `trainer.logger.experiment` in setup "
     "works)"),
    (r"test_eval_loop_logging\.py::test_log_works_in_test_callback$",
     "builds its expected keys from trainer._results.dataloader_idx (Lightning's result collection: None outside a "
     "batch); volt's metric keys and values are Lightning's"),
    (r"test_rich_progress_bar\.py::test_rich_progress_bar_custom_theme$",
     "stops Lightning's background refresh thread (progress.live._refresh_thread), which volt's RichProgressBar does "
     "not have (it redraws from the batch hooks); the theme's styles reach the columns as in Lightning"),
]


def classify(message: str, test: str = ""):
    """(kind, cause) of a failure: a listed deliberate difference, internal test or missing feature by its test
    id, otherwise from its first line."""
    for pattern, reason in DELIBERATE_TESTS:
        if re.search(pattern, test):
            return DELIBERATE, reason
    for pattern, reason in INTERNAL_TESTS:
        if re.search(pattern, test):
            return INTERNAL, reason
    for pattern, reason in MISSING_TESTS:
        if re.search(pattern, test):
            return MISSING, reason
    for pattern, kind, cause in RULES:
        match = re.search(pattern, message)
        if match:
            return kind, cause or match.group("cause")
    return DIFFERENT, re.sub(r"\s+", " ", message)[:70]


def print_kinds(results, top: int = 12) -> None:
    """Failures (and errors) by kind, with each kind's most frequent causes."""
    by_kind = collections.defaultdict(collections.Counter)
    for result in results:
        if result["outcome"] in ("failed", "errors"):
            kind, cause = classify(result["message"], result["test"])
            by_kind[kind][cause] += 1
    for kind in (INTERNAL, MISSING, DIFFERENT, DELIBERATE, TIMEOUT, SETUP):
        causes = by_kind[kind]
        print(f"\n{kind}: {sum(causes.values())}")
        for cause, n in causes.most_common(top):
            print(f"  {n:5d}  {cause}")


def print_differences(results) -> None:
    """Each failure of kind "public behaviour difference", by test id, with its cause: the list still to fix."""
    for result in results:
        if result["outcome"] in ("failed", "errors"):
            kind, cause = classify(result["message"], result["test"])
            if kind == DIFFERENT:
                print(f"{result['test'].split('tests_pytorch/')[-1]}  | {cause}")


def print_changes(before, after) -> None:
    """The tests whose outcome differs between two runs (`before -> after`), with the first line before."""
    old = {r["test"]: r for r in before}
    for result in after:
        previous = old.get(result["test"])
        if previous is not None and previous["outcome"] != result["outcome"]:
            print(f"{previous['outcome']:>7} -> {result['outcome']:<7} {result['test'].split('tests_pytorch/')[-1]}"
                  f"  | {previous['message'][:90]}")


def counts(results):
    table = {}
    for result in results:
        row = table.setdefault(result["dir"], dict.fromkeys(OUTCOMES, 0))
        row[result["outcome"]] += 1
    return table


def print_table(outs):
    tables = [counts(read_results(out)) for out in outs]
    directories = sorted({d for table in tables for d in table})
    empty = dict.fromkeys(OUTCOMES, 0)
    if len(tables) == 1:
        print("| directory | passed | failed | errors | skipped |\n|---|---:|---:|---:|---:|")
        rows = [(d, [tables[0].get(d, empty)[o] for o in OUTCOMES]) for d in directories]
        rows.append(("**total**", [sum(t[o] for t in tables[0].values()) for o in OUTCOMES]))
        for name, values in rows:
            print(f"| {name} | " + " | ".join(str(v) for v in values) + " |")
        return
    print("| directory | passed | failed | errors | skipped |\n|---|---:|---:|---:|---:|")
    before, after = tables[0], tables[-1]
    for d in directories + ["**total**"]:
        if d == "**total**":
            b = {o: sum(t[o] for t in before.values()) for o in OUTCOMES}
            a = {o: sum(t[o] for t in after.values()) for o in OUTCOMES}
        else:
            b, a = before.get(d, empty), after.get(d, empty)
        print(f"| {d} | " + " | ".join(f"{b[o]} -> {a[o]}" for o in OUTCOMES) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests_dir", nargs="?", help="Lightning's tests/tests_pytorch")
    parser.add_argument("out", nargs="*", help="output folder, then directories to run (default: all)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test (pytest-timeout)")
    parser.add_argument("--table", action="store_true", help="only print the table of finished runs")
    parser.add_argument("--kinds", action="store_true", help="only print the failures of a finished run by kind")
    parser.add_argument("--differences", action="store_true", help="only print the tests of a finished run that "
                                                                   "fail with a public behaviour difference")
    parser.add_argument("--changes", action="store_true", help="only print the tests whose outcome differs between "
                                                               "two finished runs (before, after)")
    args = parser.parse_args()
    if args.kinds or args.table or args.changes or args.differences:  # the positional arguments are output folders (before, after)
        folders = [Path(p) for p in [args.tests_dir, *args.out]]
        if args.changes:
            print_changes(read_results(folders[0]), read_results(folders[-1]))
        elif args.differences:
            print_differences(read_results(folders[-1]))
        else:
            print_kinds(read_results(folders[-1])) if args.kinds else print_table(folders)
        return
    tests_dir, out, only = Path(args.tests_dir).resolve(), Path(args.out[0]).resolve(), args.out[1:]
    out.mkdir(parents=True, exist_ok=True)
    for target in only or targets(tests_dir):
        seconds = run_one(tests_dir, out, target, args.timeout)
        row = counts(read_results(out)).get(target, dict.fromkeys(OUTCOMES, 0))
        print(f"{target:16s} {seconds:7.0f} s  " + "  ".join(f"{o} {row[o]}" for o in OUTCOMES), flush=True)
    (out / "results.json").write_text(json.dumps(read_results(out), indent=1))
    print_table([out])
    print_kinds(read_results(out))


if __name__ == "__main__":
    main()
