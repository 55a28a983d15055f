"""Data parallelism: one process per GPU, gradients averaged once per optimizer step.

Every process keeps its own copy of the variables (as Horovod does), starts from rank 0's
values and applies the same averaged gradient, so the copies stay identical. Engines:
- `horovod`: `horovod.tensorflow` (started by horovodrun, mpirun or srun with MPI);
- `tf_distribute`: TensorFlow's MultiWorkerMirroredStrategy, used only for its collectives
  (RING on CPU, NCCL on GPU), started by `scripts/launch_processes.sh` or srun; keeping the
  variables outside the strategy's scope avoids Keras 3's own all-reduce inside
  `apply_gradients`, which would count the gradients once per replica;
- `single`: one process, nothing to reduce.
The command-line programs pick one with `create_engine`, passing the process environment in.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Mapping, Sequence

import tensorflow as tf

logger = logging.getLogger(__name__)

ENGINE_NAMES = ("auto", "horovod", "tf_distribute", "single")
HOROVOD_ENVIRONMENT = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
DEFAULT_PORT = 23456


def as_tf_variable(variable: Any) -> tf.Variable:
    """The tf.Variable behind a Keras 3 variable (Horovod and assignment need the real one)."""
    return variable if isinstance(variable, tf.Variable) else variable.value


class SingleProcess:
    """One process: rank 0 of 1."""

    name = "single"

    def __init__(self) -> None:
        self.rank, self.size, self.local_rank = 0, 1, 0

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor], fp16_compression: bool = False) -> list[tf.Tensor]:
        return list(tensors)

    def broadcast_from_chief(self, variables: Sequence[Any]) -> None:
        """Nothing to do: there is one copy."""

    def agree(self, flag: bool) -> bool:
        """Whether any process raised `flag` (used to stop every rank at the same step)."""
        return flag


class HorovodEngine(SingleProcess):
    """`horovod.tensorflow` (never `horovod.tensorflow.keras`: it silently does not reduce with Keras 3)."""

    name = "horovod"

    def __init__(self) -> None:
        super().__init__()
        import horovod.tensorflow as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor], fp16_compression: bool = False) -> list[tf.Tensor]:
        compression = self.hvd.Compression.fp16 if fp16_compression else self.hvd.Compression.none
        return self.hvd.grouped_allreduce(list(tensors), op=self.hvd.Average, compression=compression)

    def broadcast_from_chief(self, variables: Sequence[Any]) -> None:
        self.hvd.broadcast_variables([as_tf_variable(v) for v in variables], root_rank=0)

    def agree(self, flag: bool) -> bool:
        return bool(self.hvd.allreduce(tf.constant(float(flag)), op=self.hvd.Sum).numpy() > 0)


class TFDistributeEngine(SingleProcess):
    """MultiWorkerMirroredStrategy's collectives over the workers named in TF_CONFIG."""

    name = "tf_distribute"

    def __init__(self, local_rank: int) -> None:
        super().__init__()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = self.strategy.cluster_resolver
        self.rank = resolver.task_id or 0  # None without TF_CONFIG: one worker (e.g. a one-task srun)
        self.size = self.strategy.num_replicas_in_sync
        self.local_rank = local_rank
        self._sum = tf.function(self._replica_sum)

    def _replica_sum(self, tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        def replica_fn(*values: tf.Tensor) -> list[tf.Tensor]:
            # tf.identity places each value on the replica's device; the collective needs one.
            on_device = [tf.identity(v) for v in values]
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, on_device)

        results = self.strategy.run(replica_fn, args=tuple(tensors))
        return [self.strategy.experimental_local_results(r)[0] for r in results]

    def _sum_by_dtype(self, tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """The collective packs a batch into one buffer, so each dtype goes separately."""
        summed: list[tf.Tensor | None] = [None] * len(tensors)
        for dtype in {t.dtype for t in tensors}:
            indices = [i for i, t in enumerate(tensors) if t.dtype == dtype]
            for i, value in zip(indices, self._sum([tensors[i] for i in indices])):
                summed[i] = value
        return summed

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor], fp16_compression: bool = False) -> list[tf.Tensor]:
        wire = [tf.cast(t, tf.float16) if fp16_compression else t for t in tensors]
        summed = self._sum_by_dtype(wire)
        return [tf.cast(s, t.dtype) / self.size for s, t in zip(summed, tensors)]

    def broadcast_from_chief(self, variables: Sequence[Any]) -> None:
        """A sum in which only the chief contributes is the chief's value."""
        variables = [as_tf_variable(v) for v in variables]
        contributions = [v.read_value() if self.is_chief else tf.zeros_like(v) for v in variables]
        for variable, value in zip(variables, self._sum_by_dtype(contributions)):
            variable.assign(value)

    def agree(self, flag: bool) -> bool:
        return bool(self._sum([tf.constant(float(flag))])[0].numpy() > 0)


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compact host list ("node[01-03,07],gpu5") as host names, without scontrol."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            start, _, end = part.partition("-")
            for number in range(int(start), int(end or start) + 1):
                hosts.append(f"{prefix}{number:0{len(start)}d}")
    return hosts


def expand_tasks_per_node(tasks_per_node: str) -> list[int]:
    """SLURM_TASKS_PER_NODE ("2(x3),1") as one count per node ([2, 2, 2, 1])."""
    counts = []
    for count, repeat in re.findall(r"(\d+)(?:\(x(\d+)\))?", tasks_per_node):
        counts.extend([int(count)] * int(repeat or 1))
    return counts


def tf_config_from_slurm(environ: Mapping[str, str], port: int = DEFAULT_PORT) -> dict[str, Any]:
    """TF_CONFIG for the task srun started: workers in Slurm's task order, one port per local task."""
    hosts = expand_hostlist(environ["SLURM_JOB_NODELIST"])
    counts = expand_tasks_per_node(environ["SLURM_TASKS_PER_NODE"])
    workers = [f"{host}:{port + local}" for host, count in zip(hosts, counts) for local in range(count)]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(environ["SLURM_PROCID"])}}


def pin_gpu(local_rank: int) -> None:
    """One GPU per process, memory allocated as needed (before TensorFlow touches a device)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[local_rank % len(gpus)]
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)


def detect_engine(environ: Mapping[str, str]) -> str:
    """The engine the launcher implies: horovodrun/mpirun -> horovod; TF_CONFIG or a multi-task
    srun -> tf_distribute; otherwise a single process."""
    if any(name in environ for name in HOROVOD_ENVIRONMENT):
        return "horovod"
    if "TF_CONFIG" in environ or int(environ.get("SLURM_NTASKS", "1")) > 1:
        return "tf_distribute"
    return "single"


def local_rank_from(environ: Mapping[str, str]) -> int:
    for name in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"):
        if name in environ:
            return int(environ[name])
    return 0


def create_engine(name: str, environ: Mapping[str, str]) -> SingleProcess:
    """Start the chosen engine (`auto` detects it). Call before building models or datasets.

    `environ` is the process environment; for tf_distribute under srun without TF_CONFIG, the
    returned dict from `tf_config_from_slurm` must be exported by the caller first
    (`prepare_environment` does both).
    """
    name = detect_engine(environ) if name == "auto" else name
    if name not in ENGINE_NAMES[1:]:
        raise ValueError(f"unknown engine {name!r}; expected one of {ENGINE_NAMES}")
    local_rank = local_rank_from(environ)
    pin_gpu(local_rank)
    if name == "horovod":
        engine: SingleProcess = HorovodEngine()
    elif name == "tf_distribute":
        engine = TFDistributeEngine(local_rank)
    else:
        engine = SingleProcess()
    logger.info("engine %s: rank %d of %d (local rank %d)", engine.name, engine.rank, engine.size, engine.local_rank)
    return engine


def prepare_environment(environ: dict[str, str]) -> None:
    """Under a multi-task srun without TF_CONFIG, derive it from Slurm's variables (in place)."""
    if "TF_CONFIG" not in environ and int(environ.get("SLURM_NTASKS", "1")) > 1 \
            and not any(name in environ for name in HOROVOD_ENVIRONMENT):
        port = int(environ.get("ELECTRA_BASE_PORT", DEFAULT_PORT))
        environ["TF_CONFIG"] = json.dumps(tf_config_from_slurm(environ, port))

