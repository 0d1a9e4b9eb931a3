"""Which shard a generator process makes: from ``--num_shards/--shard_index``, else from the environment.

Schedulers say which task a process is in environment variables; this maps them to a shard
``K of N`` (video i goes to shard i % N), so that a SLURM job array, ``srun`` tasks or torchrun /
accelerate ranks need no flag:

- SLURM job array: ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``, ``SLURM_ARRAY_TASK_MIN``
  (and ``SLURM_ARRAY_TASK_STEP`` for ``--array=1-15:2``): task ``(ID - MIN) / STEP`` of ``COUNT``.
  Arrays may start at any offset; ``%K`` throttling changes nothing. An index list that is not an
  even range (``--array=1,4,9``) cannot be mapped: a clear error, give the flags.
- ``srun`` tasks: ``SLURM_PROCID`` of ``SLURM_NTASKS``.
- torchrun / accelerate: ``RANK`` of ``WORLD_SIZE``; ``LOCAL_RANK`` picks ``cuda:LOCAL_RANK``
  (unless ``--device`` is given).

An array task running several processes (srun tasks or ranks) splits its part again: shard
``array_task * P + process`` of ``array_count * P``. torchrun under srun (one launcher task per
node, ``WORLD_SIZE`` a multiple of ``SLURM_NTASKS``) is sharded by its ranks. Explicit flags win
over the environment; half-given flags, or variables that contradict each other, are a clear
``UsageError``. Pure: the environment is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import UsageError


@dataclass(frozen=True)
class ShardChoice:
    """``shard_index`` of ``num_shards``; ``origin`` says which variables chose it (None: flags or none);
    ``local_rank``: torchrun's ``LOCAL_RANK`` (the CUDA device index), when set."""

    num_shards: int = 1
    shard_index: int = 0
    origin: str | None = None
    local_rank: int | None = None

    def message(self, device: str | None = None) -> str | None:
        """The generator's first line when the environment chose the shard or the device, else None."""
        parts = []
        if self.origin is not None:
            parts.append(f"shard {self.shard_index} of {self.num_shards} from the environment ({self.origin})")
        if device is not None and self.local_rank is not None:
            parts.append(f"device {device} from LOCAL_RANK={self.local_rank}")
        return "; ".join(parts) if parts else None


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not a whole number") from None


def _pair(env: Mapping[str, str], index_name: str, count_name: str) -> tuple[int, int] | None:
    index, count = _int(env, index_name), _int(env, count_name)
    if index is None and count is None:
        return None
    if index is None or count is None:
        missing = index_name if index is None else count_name
        present = count_name if index is None else index_name
        raise UsageError(f"environment: {present} is set but {missing} is not; set both, or give --num_shards and "
                         f"--shard_index")
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"environment: {index_name}={index} is not between 0 and {count_name}={count} - 1")
    return index, count


def _array_task(env: Mapping[str, str]) -> tuple[int, int, str] | None:
    task_id = _int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is None:
        return None
    count, low = _int(env, "SLURM_ARRAY_TASK_COUNT"), _int(env, "SLURM_ARRAY_TASK_MIN")
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    if count is None or low is None:
        raise UsageError("environment: SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT and "
                         "SLURM_ARRAY_TASK_MIN; give --num_shards and --shard_index")
    offset, rest = divmod(task_id - low, step)
    if rest or not 0 <= offset < count:
        raise UsageError(
            f"environment: SLURM_ARRAY_TASK_ID={task_id} is not task 0..{count - 1} of an even array starting at "
            f"SLURM_ARRAY_TASK_MIN={low} with step {step} (an index list such as --array=1,4,9 cannot be mapped to "
            f"shards): use --array=0-{count - 1}, or give --num_shards and --shard_index"
        )
    origin = f"SLURM_ARRAY_TASK_ID={task_id} - SLURM_ARRAY_TASK_MIN={low}"
    origin += f", step {step}" if step != 1 else ""
    return offset, count, f"{origin} of SLURM_ARRAY_TASK_COUNT={count}"


def _process(env: Mapping[str, str]) -> tuple[int, int, str] | None:
    """This process within its job: torchrun's rank, else srun's task; None when one process."""
    srun = _pair(env, "SLURM_PROCID", "SLURM_NTASKS")
    torch = _pair(env, "RANK", "WORLD_SIZE")
    if torch is not None and torch[1] > 1:
        if srun is not None and srun[1] > 1 and (torch[1] % srun[1] or torch[1] < srun[1]):
            raise UsageError(
                f"environment: srun says task {srun[0]} of {srun[1]} (SLURM_PROCID/SLURM_NTASKS) and torchrun says "
                f"rank {torch[0]} of {torch[1]} (RANK/WORLD_SIZE), which do not fit together; give --num_shards "
                f"and --shard_index"
            )
        return torch[0], torch[1], f"RANK={torch[0]} of WORLD_SIZE={torch[1]}"
    if srun is not None and srun[1] > 1:
        return srun[0], srun[1], f"SLURM_PROCID={srun[0]} of SLURM_NTASKS={srun[1]}"
    return None


def resolve_shard(num_shards: int | None, shard_index: int | None, env: Mapping[str, str]) -> ShardChoice:
    """The shard of this process. ``num_shards``/``shard_index``: the flags, None when not given."""
    local_rank = _int(env, "LOCAL_RANK")
    if local_rank is not None and local_rank < 0:
        raise UsageError(f"environment: LOCAL_RANK={local_rank} is negative")
    if num_shards is not None or shard_index is not None:  # explicit flags win over the environment
        if num_shards is None:
            raise UsageError("--shard_index needs --num_shards (or neither, to take the shard from the environment)")
        return ShardChoice(num_shards, 0 if shard_index is None else shard_index, None, local_rank)
    array, process = _array_task(env), _process(env)
    if array is None and process is None:
        return ShardChoice(1, 0, None, local_rank)
    a_index, a_count, a_origin = array or (0, 1, "")
    p_index, p_count, p_origin = process or (0, 1, "")
    origin = "; ".join(o for o in (a_origin, p_origin) if o)
    return ShardChoice(a_count * p_count, a_index * p_count + p_index, origin, local_rank)


def device_for(device: str | None, choice: ShardChoice) -> str:
    """``--device`` when given; else ``cuda:LOCAL_RANK`` under torchrun, else ``cuda``."""
    if device is not None:
        return device
    return f"cuda:{choice.local_rank}" if choice.local_rank is not None else "cuda"
