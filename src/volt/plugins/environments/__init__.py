"""Cluster environments: where a process learns its rank and the rendezvous address (see
`volt/distributed/environments.py`). Pass one with `Trainer(plugins=[SLURMEnvironment(auto_requeue=False)])`."""
from volt.distributed.environments import (ClusterEnvironment, LightningEnvironment, SLURMEnvironment,
                                           TorchElasticEnvironment)

__all__ = ["ClusterEnvironment", "LightningEnvironment", "SLURMEnvironment", "TorchElasticEnvironment"]
