"""Choosing and configuring multi-process strategies from Trainer arguments and the environment (one process,
no process group: construction only)."""
import inspect
import json
import os
import signal
import sys
from datetime import timedelta

import pytest
import torch

import volt
from volt.distributed.environments import (LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment,
                                           detect_environment, find_free_port, first_slurm_host)
from volt.distributed import launcher
from volt.distributed.launcher import describe_failure, exit_reason, script_command
from volt.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_only

_connect_store = launcher.connect_store

_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK",
                "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "SLURM_NODEID", "SLURM_NODELIST", "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_NTASKS_PER_NODE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in _LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    # configuration errors under a launcher are announced to the rendezvous store: none is running here
    monkeypatch.setattr(launcher, "connect_store", lambda host, port: None)
    rank = rank_zero_only.rank
    yield
    rank_zero_only.rank = rank


def make(**kwargs) -> volt.Trainer:
    return volt.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, **kwargs)


def test_two_cpu_devices_choose_ddp_with_volts_launcher():
    trainer = make(devices=2)
    strategy = trainer.strategy
    assert isinstance(strategy, DDPStrategy) and strategy.start_method == "popen"
    assert (trainer.world_size, trainer.global_rank, trainer.num_devices) == (2, 0, 2)
    assert strategy.process_group_backend == "gloo"
    assert isinstance(strategy.cluster_environment, LightningEnvironment)
    assert isinstance(make(devices=1).strategy, SingleDeviceStrategy)
    assert make(devices=[0, 1]).world_size == 2
    assert make(devices=-1).world_size == (os.cpu_count() or 1)


@pytest.mark.parametrize("name, start_method, ddp_kwargs", [
    ("ddp", "popen", {}),
    ("ddp_spawn", "spawn", {}),
    ("ddp_fork", "fork", {}),
    ("ddp_notebook", "fork", {}),
    ("ddp_find_unused_parameters_true", "popen", {"find_unused_parameters": True}),
])
def test_strategy_names(name, start_method, ddp_kwargs):
    strategy = make(devices=2, strategy=name).strategy
    assert isinstance(strategy, DDPStrategy)
    assert strategy.start_method == start_method and strategy._ddp_kwargs == ddp_kwargs


def test_strategy_objects_take_the_trainers_devices():
    strategy = DDPStrategy(static_graph=True, timeout=timedelta(seconds=90))
    trainer = make(devices=3, strategy=strategy)
    assert trainer.strategy is strategy and strategy.world_size == 3 and strategy.timeout.seconds == 90
    fsdp = make(devices=2, strategy="fsdp").strategy
    assert isinstance(fsdp, FSDPStrategy) and fsdp.world_size == 2
    assert make(devices=1, strategy="ddp").world_size == 1  # a world of one is allowed (e.g. nccl checks)


def test_bad_strategy_options_are_named():
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['bogus'\].*find_unused_parameters"):
        DDPStrategy(bogus=1)
    with pytest.raises(MisconfigurationException, match="start_method='thread' is not supported"):
        DDPStrategy(start_method="thread")
    with pytest.raises(MisconfigurationException, match="must be a datetime.timedelta"):
        DDPStrategy(timeout=30)
    for strategy in (DDPStrategy, FSDPStrategy):
        with pytest.raises(MisconfigurationException, match="state_dict_type='local' is not supported: use 'full' "
                                                            r"\(one checkpoint file, written by rank 0\) or 'sharded'"):
            strategy(state_dict_type="local")
    assert (DDPStrategy().state_dict_type, FSDPStrategy().state_dict_type) == ("full", "sharded")
    with pytest.deprecated_call(match="`DDPStrategy.is_distributed` is deprecated"):
        assert DDPStrategy().is_distributed


def test_fsdp_options_as_lightning_takes_them(tmp_path):
    """sharding_strategy (torch's enum or its name in any case), device_mesh (a tuple, e.g. from a config file),
    cpu_offload (a bool or torch's CPUOffload) are read as Lightning reads them; wrong ones are named at once."""
    from jsonargparse import ArgumentParser
    from torch.distributed.fsdp import CPUOffload, ShardingStrategy

    assert [FSDPStrategy(sharding_strategy=name).sharding_strategy for name in (
        "full_shard", ShardingStrategy.SHARD_GRAD_OP, "NO_SHARD", "HYBRID_SHARD", "_hybrid_shard_zero2")] == list(
        ShardingStrategy)
    assert [FSDPStrategy(sharding_strategy=s).reshard_after_forward for s in ShardingStrategy] == [
        True, False, False, True, False]
    with pytest.raises(MisconfigurationException, match="sharding_strategy='ZERO3' is not one of torch's"):
        FSDPStrategy(sharding_strategy="ZERO3")
    assert [FSDPStrategy(cpu_offload=flag).cpu_offload for flag in (CPUOffload(), CPUOffload(offload_params=True),
                                                                    True, False, None)] == [
        CPUOffload(False), CPUOffload(True), CPUOffload(True), CPUOffload(False), CPUOffload(False)]

    parser = ArgumentParser()  # the annotation takes a config's list as the tuple
    parser.add_argument("--device_mesh", type=inspect.signature(FSDPStrategy).parameters["device_mesh"].annotation)
    assert parser.parse_args(["--device_mesh=[1, 2]"]).device_mesh == (1, 2)
    hybrid = FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=[1, 2])
    assert hybrid.device_mesh == (1, 2) and make(devices=2, strategy=hybrid).world_size == 2
    with pytest.raises(MisconfigurationException, match=r"device_mesh=\(2, 2\) makes 2 x 2 = 4 ranks, but this run "
                                                        r"has 2 .* whose product is 2"):
        make(devices=2, strategy=FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(2, 2)))
    with pytest.raises(MisconfigurationException, match=r"device_mesh=\(1, 2\) \(replicas, shards\) is for "
                                                        "sharding_strategy='HYBRID_SHARD'"):
        FSDPStrategy(device_mesh=(1, 2))
    with pytest.raises(MisconfigurationException, match="must be \\(replicas, shards\\): two whole numbers"):
        FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(0, 2))
    with pytest.raises(MisconfigurationException, match="device_mesh='2x4' must be"):
        FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh="2x4")

    # storage_options are for the CheckpointIO plugin, which writes full checkpoints, not sharded folders
    with pytest.raises(TypeError, match=r"`FSDPStrategy.save_checkpoint\(..., storage_options=...\)` is not supported "
                                        "with state_dict_type='sharded'"):
        FSDPStrategy().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"bucket": "runs"})
    with pytest.raises(TypeError, match="TorchCheckpointIO.save_checkpoint takes no storage_options"):
        FSDPStrategy(state_dict_type="full").save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"bucket": 1})


def test_fsdp_takes_fsdp1s_mixed_precision_as_lightning_programs_pass_it(monkeypatch):
    """`FSDPStrategy(mixed_precision=MixedPrecision(...))` (FSDP1's config, from Lightning's docs) computes in its
    param_dtype with float32 weights kept, casts the inputs and floating-point buffers; was a dtype mismatch."""
    from torch.distributed.fsdp import MixedPrecision

    from helpers import BoringModel, loader

    for name in ("MASTER_ADDR", "MASTER_PORT"):  # as in the activation checkpointing test below
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    class Model(BoringModel):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(1))

        def training_step(self, batch, batch_idx):
            self.computed_in = self(batch[0]).dtype
            return super().training_step(batch, batch_idx)

    config = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
    strategy, model = FSDPStrategy(mixed_precision=config), Model()
    assert strategy.mixed_precision_config is config
    make(strategy=strategy, devices=1, max_steps=2, limit_val_batches=0).fit(model, loader())
    torch.distributed.destroy_process_group()
    assert (model.computed_in, model.scale.dtype) == (torch.bfloat16, torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_started_rank_never_starts_the_ranks_again(monkeypatch):
    """LOCAL_RANK=1 (set by hand) with an environment that says it starts no processes: volt would start the ranks
    from a rank, each copy would do the same; Lightning's error, before anything is started."""
    from helpers import BoringModel

    class StartsNothing(LightningEnvironment):
        @property
        def creates_processes_externally(self) -> bool:
            return False

    monkeypatch.setenv("LOCAL_RANK", "1")
    trainer = make(devices=2, strategy="ddp", plugins=[StartsNothing()], max_steps=1)
    with pytest.raises(RuntimeError, match=r"Lightning attempted to launch new distributed processes with `local_rank "
                                           r"> 0` \(LOCAL_RANK=1\).*StartsNothing's is False"):
        trainer.fit(BoringModel())


def test_fsdp_without_fully_shard_is_a_clear_error(monkeypatch):
    import torch.distributed.fsdp

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")
    with pytest.raises(MisconfigurationException, match="FSDP2 .* does not provide. Install torch >= 2.6"):
        FSDPStrategy()


def test_volts_launcher_children_read_their_rank_from_the_environment(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    trainer = make(devices=2, num_nodes=2)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert rank_zero_only.rank == 3
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(MisconfigurationException, match="WORLD_SIZE=8 in the environment, but devices=2"):
        make(devices=2, num_nodes=2)


def torchrun_env(monkeypatch, rank=3, local_rank=1, node=1, world=4, per_node=2):
    for key, value in dict(TORCHELASTIC_RUN_ID="job", RANK=rank, LOCAL_RANK=local_rank, GROUP_RANK=node,
                           WORLD_SIZE=world, LOCAL_WORLD_SIZE=per_node, MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=29500).items():
        monkeypatch.setenv(key, str(value))


def test_torchrun_is_detected_first_and_sets_the_topology(monkeypatch):
    torchrun_env(monkeypatch)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # torchrun inside a SLURM allocation: torchrun wins
    assert isinstance(detect_environment(), TorchElasticEnvironment)
    trainer = make()  # devices left at the default: one per process torchrun started
    assert isinstance(trainer.strategy, DDPStrategy)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert trainer.strategy.num_nodes == 2


def test_torchrun_mismatch_is_a_clear_error(monkeypatch):
    torchrun_env(monkeypatch)
    with pytest.raises(MisconfigurationException, match="devices=3, but TorchElasticEnvironment started 2"):
        make(devices=3)
    with pytest.raises(MisconfigurationException, match="starts its own processes, but this process was started by"):
        make(devices=2, strategy="ddp_spawn")


def test_slurm_environment(monkeypatch):
    for key, value in dict(SLURM_NTASKS=4, SLURM_PROCID=2, SLURM_LOCALID=0, SLURM_NODEID=1,
                           SLURM_NODELIST="gpu[003-004],cpu1", SLURM_JOB_ID=812345, SLURM_NTASKS_PER_NODE="2(x2)",
                           SLURM_JOB_NAME="train").items():
        monkeypatch.setenv(key, str(value))
    env = detect_environment()
    assert isinstance(env, SLURMEnvironment)
    assert (env.main_address, env.main_port, env.local_world_size()) == ("gpu003", 15000 + 2345, 2)
    trainer = make(devices=2, num_nodes=2)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (2, 0, 1)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation is not an srun step
    assert isinstance(detect_environment(), LightningEnvironment)


def test_first_slurm_host():
    assert first_slurm_host("node[07-09,12],other") == "node07"
    assert first_slurm_host("single") == "single"


def test_sync_batchnorm_on_cpu_is_refused():
    model = volt.LightningModule()
    model.bn = torch.nn.BatchNorm1d(3)
    trainer = make(devices=2, sync_batchnorm=True)
    model.trainer = trainer
    with pytest.raises(MisconfigurationException, match="sync_batchnorm=True needs CUDA"):
        trainer.strategy.setup_module(model)


def test_ddp_needs_a_script_to_rerun(monkeypatch):
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    monkeypatch.setattr(sys, "argv", ["-c"])
    with pytest.raises(MisconfigurationException, match="strategy='ddp_notebook' \\(fork\\) or 'ddp_spawn'"):
        script_command()


def test_failure_messages_name_the_rank_and_the_cause():
    record = {"rank": 1, "world_size": 2, "node": 0, "local_rank": 1, "pid": 42, "error": "ValueError: boom",
              "traceback": "Traceback (most recent call last):\nValueError: boom\n"}
    full = describe_failure(record)
    assert full.startswith("Rank 1 of 2 (node 0, local rank 1, pid 42) failed") and "Traceback of rank 1" in full
    assert "printed by rank 0 and by rank 1" in describe_failure(record, full=False)
    assert exit_reason(-signal.SIGKILL).startswith("the process was killed by SIGKILL")
    assert "exited with code 3" in exit_reason(3)


def test_a_configuration_error_is_announced_to_ranks_waiting_at_the_rendezvous(monkeypatch):
    from torch.distributed import TCPStore

    monkeypatch.setattr(launcher, "connect_store", _connect_store)
    port = find_free_port()
    store = TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    torchrun_env(monkeypatch)
    monkeypatch.setenv("MASTER_PORT", str(port))
    with pytest.raises(MisconfigurationException, match="devices=3"):
        make(devices=3)
    record = json.loads(store.get(launcher.failure_key()))
    assert record["rank"] == "3" and "devices=3, but TorchElasticEnvironment started 2" in record["error"]


def test_fsdp_window_gradients_degrade_with_a_warning_when_torch_internals_differ(monkeypatch, caplog):
    """FSDP2 keeps accumulation-window gradients in torch-private records; if a torch version lays them out
    differently, the checkpoint is still written (without them) and the user is told what that means."""
    strategy = FSDPStrategy()

    def changed_internals():
        raise AttributeError("'FSDPParam' object has no attribute 'unsharded_accumulated_grad'")
        yield

    monkeypatch.setattr(strategy, "_sharded", object())
    monkeypatch.setattr(strategy, "_param_records", changed_internals)
    with pytest.warns(UserWarning, match="accumulation-window gradients differently .* are not in this checkpoint"):
        assert strategy.accumulated_grads() == {}
    with pytest.warns(UserWarning, match="could not be restored; the resumed window restarts its sums"):
        strategy.load_accumulated_grads({"w": torch.zeros(1)})


def test_a_strategy_hears_of_a_failed_run_after_the_callbacks():
    """`Strategy.on_exception(exception)` runs when a run fails, after the callbacks' `on_exception`, as in
    Lightning; DDP adds the fix to torch's error for parameters unused in the loss."""
    from helpers import BoringModel, loader

    heard = []

    class Listening(SingleDeviceStrategy):
        def on_exception(self, exception):
            heard.append(("strategy", exception))

    class Failing(BoringModel):
        def on_train_start(self):
            raise ValueError("broken")

    callback = volt.Callback()
    callback.on_exception = lambda trainer, module, exception: heard.append(("callback", exception))
    with pytest.raises(ValueError, match="broken"):
        make(strategy=Listening(), callbacks=[callback], max_steps=1).fit(Failing(), loader())
    assert [who for who, _ in heard] == ["callback", "strategy"] and heard[0][1] is heard[1][1]

    error = RuntimeError("Expected to have finished reduction in the prior iteration before starting a new one.")
    DDPStrategy().on_exception(error)
    assert "strategy='ddp_find_unused_parameters_true'" in str(error) and str(error).startswith("Expected to")
    other = RuntimeError("something else")
    DDPStrategy().on_exception(other)
    assert str(other) == "something else"


def test_a_custom_strategy_restores_with_lightnings_signatures(tmp_path):
    """A strategy subclass written for Lightning: `load_model_state_dict(checkpoint, strict)` and
    `load_optimizer_state_dict(checkpoint)` get the whole checkpoint, `optimizers` are the Trainer's, and
    `lightning_restore_optimizer = False` leaves the optimizers and schedulers to the strategy."""
    from helpers import BoringModel, loader

    trainer = make(max_steps=2)
    trainer.fit(BoringModel(), loader())
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)

    for restores in (True, False):
        seen = {}

        class Custom(SingleDeviceStrategy):
            lightning_restore_optimizer = restores

            def load_model_state_dict(self, checkpoint, strict=True):
                seen["model"] = sorted(checkpoint["state_dict"])
                super().load_model_state_dict(checkpoint, strict=strict)

            def load_optimizer_state_dict(self, checkpoint):
                seen["optimizers"] = (len(checkpoint["optimizer_states"]), self.optimizers)
                super().load_optimizer_state_dict(checkpoint)

        trainer = make(strategy=Custom(), max_steps=3)
        model = BoringModel()
        trainer.fit(model, loader(), ckpt_path=path)
        assert seen["model"] == sorted(saved["state_dict"]) and trainer.global_step == 3
        if restores:
            assert seen["optimizers"][0] == 1 and seen["optimizers"][1] is trainer.optimizers
        else:
            assert "optimizers" not in seen


def test_fsdp_activation_checkpointing_recomputes_the_chosen_layers_in_backward(monkeypatch):
    """`FSDPStrategy(activation_checkpointing_policy={Block})`, as in Lightning: each Block's forward runs again in
    backward (its activations are not kept) and training gives the same weights; the deprecated
    `activation_checkpointing=` with it is Lightning's error."""
    from helpers import BoringModel, loader

    # the one-process group FSDP needs stays for the process, as in Lightning: this test ends it, and the rendezvous
    # variables the launch sets are undone with the test (setenv records them as unset, delenv starts without them)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    class Block(torch.nn.Linear):
        calls = 0

        def forward(self, x):
            type(self).calls += 1
            return super().forward(x)

    class Model(BoringModel):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Sequential(Block(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))

    runs = []
    for policy in (None, {Block}):
        volt.seed_everything(0)
        Block.calls, model = 0, Model()
        make(strategy=FSDPStrategy(activation_checkpointing_policy=policy), devices=1, max_steps=3,
             limit_val_batches=0).fit(model, loader())
        runs.append((Block.calls, model.layer[0].weight.detach().full_tensor()))
    torch.distributed.destroy_process_group()
    assert (runs[0][0], runs[1][0]) == (3, 6) and torch.equal(runs[0][1], runs[1][1])
    with pytest.raises(ValueError, match="cannot set both `activation_checkpointing` and"):
        FSDPStrategy(activation_checkpointing=torch.nn.Linear, activation_checkpointing_policy={torch.nn.Linear})
    with pytest.deprecated_call(match="activation_checkpointing=...\\)` is deprecated"):
        assert FSDPStrategy(activation_checkpointing=Block).activation_checkpointing_policy == {Block}


def test_one_process_ddp_shards_the_data_as_lightning_and_keeps_no_watchdog_thread(monkeypatch, quiet_lightning):
    """strategy="ddp" on one device: the loaders get distributed samplers as in Lightning (the same shuffled order
    for the same seed), a custom BatchSampler subclass is made again over one, and no watchdog thread outlives the
    Trainer's calls (it has nothing to watch between them)."""
    import threading

    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler

    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK"):  # undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    class Custom(BatchSampler):
        pass

    def run(pl):
        seen = []

        class Model(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch, batch_idx):
                seen.append(batch.flatten().tolist())
                return self.layer(batch).sum()

            def test_step(self, batch, batch_idx):
                seen.append(batch.flatten().tolist())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        pl.seed_everything(3)
        data = torch.arange(10.0).unsqueeze(1)
        trainer = pl.Trainer(accelerator="cpu", devices=1, strategy="ddp", max_epochs=2, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(Model(), DataLoader(data, batch_size=4, shuffle=True))
        assert isinstance(trainer.train_dataloader.sampler, DistributedSampler)
        trainer.test(trainer.lightning_module, DataLoader(data, batch_sampler=Custom(SequentialSampler(data), 3, True)))
        batch_sampler = trainer.test_dataloaders.batch_sampler
        assert isinstance(batch_sampler.sampler, DistributedSampler) and batch_sampler.batch_size == 3
        return seen

    ours = run(volt)
    assert not [thread for thread in threading.enumerate() if thread.name == "volt-watchdog"]
    assert ours == run(quiet_lightning)
    assert ours[-3:] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    torch.distributed.destroy_process_group()


def test_num_nodes_without_a_rendezvous_address_builds_but_fit_says_what_is_missing():
    """As Lightning, `Trainer(num_nodes=2)` can be built anywhere; started by hand without MASTER_ADDR/MASTER_PORT,
    `fit` refuses before any node waits for the others."""
    from helpers import BoringModel, loader

    trainer = make(strategy="ddp", num_nodes=2)
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 1, 2)
    with pytest.raises(MisconfigurationException, match="num_nodes=2: every node must find rank 0 at the same "
                                                        "address. Set MASTER_ADDR"):
        trainer.fit(BoringModel(), loader())
