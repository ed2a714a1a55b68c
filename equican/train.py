"""Training and evaluation: one loop for one CPU, one GPU, or many processes under ``torchrun``.

[`train`][equican.train.train] runs a [`TrainConfig`][equican.config.TrainConfig]:

1. Everything is built and validated first (data, model, method, group, checkpoint to resume from), so a bad name,
   value or path fails before the first step.
2. AdamW with the configured schedule, stepped per batch; progress bars with loss and throughput on rank 0.
3. After every epoch a checkpoint is written atomically (to a temporary file, then renamed), so an interrupted run
   never leaves a torn file; ``resume`` continues from it *exactly*: the data order, the methods' random elements
   and torch's global RNG are all derived from ``(seed, epoch)``, so a resumed run reaches bit-for-bit the same
   parameters as one that was never stopped (on the same machine and thread count).
4. At the end, the metrics of [`equican.metrics`][equican.metrics] on the test split, written as JSON with the per-epoch
   history.

Distributed: under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1`` in the environment) the objective is wrapped
in ``DistributedDataParallel`` (gloo on the CPU, nccl on GPUs), a
``DistributedSampler`` gives each process ``batch_size / N`` samples of every
global batch, and only rank 0 logs, writes checkpoints and evaluates. A single process uses the same sampler with
one replica, so with a training set whose size is a multiple of ``N`` the samples of each global batch, and hence
the averaged gradients, are the same for any ``N`` (tests/test_distributed.py checks the parameters).

Files in ``config.out``: ``checkpoint.pt`` (config, epoch, objective, optimizer and scheduler state, history) and
``metrics.json`` (written atomically too), and ``.lock`` while the run writes there: a second run into the same
directory is refused, and so is a fresh run into a directory that holds one unless ``overwrite``
(``equican._rundir``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from . import metrics
from .canon import Canonicalizer
from .config import DataConfig, TrainConfig, apply_overrides, from_options
from .data import LocalScaleConfig, LocalScaleMNIST, TransformedConfig, TransformedMNIST, load_mnist
from .data.seeding import index_generator
from ._runtime import Distributed, amp_dtype, device_for, distributed_env, grad_scaler, process_group
from ._atomic import write_text_atomic
from ._checkpoint import FORMAT, load_states, read_checkpoint, remove_stale_temporaries, save_atomic
from ._paths import require_writable_dir
from . import _rundir
from .errors import ConfigError, ConvergenceWarning, DataError, EquicanWarning, NonFiniteError
from .methods import Objective, build_objective, check_method_tables, invariance_group
from .models import build_model

__all__ = ["SplitData", "load_split", "build", "train", "train_step", "evaluate", "evaluate_checkpoint",
           "load_checkpoint", "CHECKPOINT", "METRICS"]

CHECKPOINT = _rundir.CHECKPOINT
"""File name of the checkpoint [`train`][equican.train.train] writes in ``config.out`` after every epoch (and resumes
from)."""
METRICS = _rundir.METRICS
"""File name of the JSON [`train`][equican.train.train] writes in ``config.out`` at the end: config, history and
evaluation."""
# Stream of index_generator for the per-epoch reseeding of torch's global RNG (dropout and the like).
_TORCH_RNG_STREAM = 7

# ---------------------------------------------------------------------------------------------- data
@dataclass
class SplitData:
    """One split, in memory.

    Attributes:
        x: images ``(N, C, H, W)`` float32 in ``[0, 1]``.
        y: labels ``(N,)`` int64.
        num_classes: the number of labels of the dataset (``10^digits`` for Locally Scaled MNIST).
        source: the dataset object, when there is one (Locally Scaled MNIST renders references and rescalings
            for the local-scale error from it).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    source: Any = None


def load_split(config: DataConfig, split: str) -> SplitData:
    """Load or render one split of the configured dataset.

    Warns ([`EquicanWarning`][equican.errors.EquicanWarning]) when the split's limit (``data.train_limit`` /
    ``data.test_limit``) asks for more source digits than the data holds (the bundled subset has 500 training and
    200 test digits): the run then uses all of them, fewer than the config says.

    Raises:
        ConfigError: an invalid dataset option. DataError: missing or corrupt MNIST files.
    """
    where = f"data ({config.dataset})"
    limit = config.train_limit if split == "train" else config.test_limit
    key = "train_limit" if split == "train" else "test_limit"
    if config.dataset == "mnist" and config.options:
        raise ConfigError(f"{where}: expected no options for plain MNIST, got {dict(config.options)!r}")
    # Validate the options before reading any file.
    options = (from_options(LocalScaleConfig, config.options, where=where) if config.dataset == "local_scale" else
               from_options(TransformedConfig, config.options, where=where) if config.dataset == "transformed" else None)
    images, labels = load_mnist(split, config.root, limit)
    if limit is not None and images.shape[0] < limit:
        source = config.root or "the bundled MNIST subset"
        warnings.warn(EquicanWarning(
            f"data.{key} is {limit}, but {source} holds only {images.shape[0]} {split} digits: using all "
            f"{images.shape[0]}"), stacklevel=2)
    if config.dataset == "local_scale":
        dataset = LocalScaleMNIST.from_tensors(images, labels, options)
        x, y = dataset.tensors()
        return SplitData(x, y, dataset.num_classes, dataset)
    if config.dataset == "transformed":
        dataset = TransformedMNIST.from_tensors(images, labels, config=options)
        x, y = dataset.tensors()
        return SplitData(x, y, 10, dataset)
    return SplitData(images[:, None].float() / 255, labels.long(), 10)


class _Indexed(Dataset):
    """``(x_i, y_i, i)``: the index keys each sample's random elements."""

    def __init__(self, data: SplitData) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.data.x[i], self.data.y[i], i


# ---------------------------------------------------------------------------------------------- building
def build(config: TrainConfig, train_data: SplitData) -> Objective:
    """The objective (model and loss) of ``config`` for the shapes of ``train_data``, initialized from the seed.

    Raises:
        UnknownNameError: an unknown model, method or group. ConfigError: an invalid option.
    """
    _, channels, height, width = train_data.x.shape
    torch.manual_seed(config.seed)  # every process builds the same initial parameters
    backbone = build_model(config.model.name, in_channels=channels, num_classes=train_data.num_classes,
                           image_size=height, options=config.model.options)
    objective = build_objective(config.method, backbone, in_channels=channels, seed=config.seed)
    # A model rebuilt for evaluation (source None: no training data) needs no second views.
    if getattr(getattr(objective, "schedule", None), "pairs", False) and train_data.source is not None:
        if not isinstance(train_data.source, LocalScaleMNIST):
            raise ConfigError(f"method.options.canon_pairs: expected a dataset that renders its own nuisance "
                              f"(local_scale), got {type(train_data.source).__name__}")
        objective.views = train_data.source.rescaled_batch
    return objective


def _schedule(config: TrainConfig, total_steps: int) -> Any:
    optim = config.optim
    decay_steps = max(total_steps - optim.warmup_steps, 1)

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = min((step - optim.warmup_steps) / decay_steps, 1.0)
        if optim.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if optim.schedule == "linear":
            return 1 - progress
        return 1.0

    return factor


# ---------------------------------------------------------------------------------------------- checkpoints
def evaluation_overrides(overrides: Any) -> list[str]:
    """``overrides`` checked to be ``data.*`` / ``eval.*`` override strings: evaluation takes the model, method and
    optimizer from the checkpoint, so an override of anything else would be dropped without a word.

    Raises:
        ConfigError: not a sequence of strings, or a key outside ``data`` and ``eval``.
    """
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)) \
            or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(f"evaluate: expected overrides to be a TrainConfig or a list of KEY=VALUE strings, "
                          f"got {type(overrides).__name__}")
    for item in overrides:
        if not item.strip().startswith(("data.", "eval.")):
            raise ConfigError(f"evaluate: expected overrides of data.* or eval.* fields (the rest comes from the "
                              f"checkpoint), got {item!r}")
    return list(overrides)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[TrainConfig, Objective, dict[str, Any]]:
    """Rebuild a trained objective from a checkpoint.

    Returns:
        ``(config, objective, payload)``: the run's config, the objective with the trained parameters (in eval
        mode; ``objective.model`` is the classifier), and the raw checkpoint (``epoch``, ``history``).

    Raises:
        DataError: a missing, unreadable or foreign file. ConfigError: a config this version cannot build.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"load_checkpoint: expected a checkpoint path, got {type(path).__name__}")
    path = Path(path)
    payload = read_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"], source=f"checkpoint {path}")
    with torch.random.fork_rng(devices=[]):  # building seeds torch's RNG; loading must not change the caller's
        objective = build(config, _shape_stub(payload))
    load_states(path, objective=(objective, payload["objective"]))
    return config, objective.eval(), payload


def _shape_stub(payload: dict[str, Any]) -> SplitData:
    # The model's shapes without re-rendering the training set: stored with the checkpoint.
    c, h, w = payload["input_shape"]
    return SplitData(torch.zeros(1, c, h, w), torch.zeros(1, dtype=torch.int64), int(payload["num_classes"]))


# ---------------------------------------------------------------------------------------------- training
def train(config: TrainConfig, *, resume: bool | str | os.PathLike[str] = False,
          until_epoch: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train (and then evaluate) one run; see the module docstring.

    Args:
        config: the run.
        resume: False to start afresh; True to continue from ``config.out/checkpoint.pt``; or a checkpoint path.
        until_epoch: stop after this many epochs in total (the schedule still spans ``optim.epochs``), e.g. to
            split a long run into jobs; the run is evaluated only once all epochs are done.
        overwrite: let a fresh run replace the run ``config.out`` holds (its files are removed when training
            starts); without it such a run is refused. ``config.out`` is locked while the run writes there
            (``equican._rundir``).

    Returns:
        The metrics dict that is written to ``config.out/metrics.json`` (on every rank; only rank 0 writes it).

    Raises:
        ConfigError, UnknownNameError, DataError: before training, for any invalid setting, name or file; a
            ConfigError too for an output directory that holds a run (without ``overwrite``) or that another run
            is using.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"train: expected a TrainConfig, got {type(config).__name__}")
    if until_epoch is not None and (isinstance(until_epoch, bool) or not isinstance(until_epoch, int)
                                    or until_epoch < 1):
        raise ConfigError(f"train: expected until_epoch to be None or an int >= 1, got {until_epoch!r}")
    env = distributed_env()
    device = device_for(config.device, env)
    if config.optim.batch_size % env.world:
        raise ConfigError(f"optim.batch_size: expected batch_size divisible by the {env.world} processes, "
                          f"got {config.optim.batch_size}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    # Everything that can fail on user input happens before the first step, the output directory first.
    if env.main:
        require_writable_dir(config.out, where="config", name="out")
        remove_stale_temporaries(Path(config.out) / CHECKPOINT)  # left by a writer killed mid-save
    _rundir.check_run_directory(config.out, resume=resume, overwrite=overwrite)
    payload = _rundir.resume_payload(config, resume)
    if payload is not None and until_epoch is not None and until_epoch < payload["epoch"]:
        # Going on would rewrite metrics.json as an unfinished run of until_epoch epochs, dropping the evaluation
        # of a run whose checkpoint is further along.
        raise ConfigError(f"resume: expected until_epoch >= the checkpoint's epoch {payload['epoch']}, "
                          f"got {until_epoch}")
    train_data = load_split(config.data, "train")
    test_data = load_split(config.data, "test") if config.eval.enabled else None
    if test_data is not None and test_data.num_classes != train_data.num_classes:
        raise ConfigError(f"data: the test split has {test_data.num_classes} classes, the train split "
                          f"{train_data.num_classes}")
    check_method_tables(config.method)
    eval_group = invariance_group(config) if config.eval.enabled else None
    objective = build(config, train_data).to(device)

    clear = functools.partial(_rundir.clear_run, config.out, resume=resume) if overwrite and env.main else None
    with _rundir.RunLock(config.out, where="train") if env.main else contextlib.nullcontext(), \
            process_group(env, device):
        if env.main:  # again under the lock: another run may have finished in config.out since the check above
            _rundir.check_run_directory(config.out, resume=resume, overwrite=overwrite)
        return _fit(config, env, device, objective, train_data, test_data, eval_group, payload, until_epoch, clear)


def _fit(config: TrainConfig, env: Distributed, device: torch.device, objective: Objective,
         train_data: SplitData, test_data: SplitData | None, eval_group: Any, payload: dict[str, Any] | None,
         until_epoch: int | None, clear: Any = None) -> dict[str, Any]:
    optim = config.optim
    dataset = _Indexed(train_data)
    # One sampler for every world size: with one replica it is a seeded shuffle, with N it shards that shuffle.
    sampler = DistributedSampler(dataset, num_replicas=env.world, rank=env.rank, shuffle=True, seed=config.seed,
                                 drop_last=env.world > 1)
    loader = DataLoader(dataset, batch_size=optim.batch_size // env.world, sampler=sampler,
                        num_workers=config.workers)
    if len(loader) == 0:
        raise ConfigError(f"data: the training split has {len(dataset)} samples, fewer than one batch per process")
    net: torch.nn.Module = objective
    if env.world > 1:
        # A staged method leaves the canonicalizer or the backbone out of some epochs' loss.
        net = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=bool(getattr(objective, "staged", False)))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=optim.lr, weight_decay=optim.weight_decay,
                                  betas=optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, optim.epochs * len(loader)))
    amp = amp_dtype(config.amp, device)
    scaler = grad_scaler(amp, device)
    step = functools.partial(train_step, net, optimizer, grad_clip=optim.grad_clip, amp=amp, scaler=scaler)
    start, history = 0, []
    if payload is not None:
        states = {"scaler": (scaler, payload["scaler"])} if scaler is not None and "scaler" in payload else {}
        load_states(Path(config.out) / CHECKPOINT, objective=(objective, payload["objective"]),
                    optimizer=(optimizer, payload["optimizer"]), scheduler=(scheduler, payload["scheduler"]), **states)
        start, history = int(payload["epoch"]), list(payload["history"])
    stop = optim.epochs if until_epoch is None else min(until_epoch, optim.epochs)
    out = Path(config.out)
    if clear is not None:  # --overwrite: the previous run's files go once nothing can fail on input any more
        clear()

    for epoch in range(start, stop):
        history.append(_epoch(config, env, device, objective, loader, sampler, step, scheduler, epoch))
        if env.main:
            save_atomic({"format": FORMAT, "config": config.to_dict(), "epoch": epoch + 1,
                         "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "history": history,
                         "input_shape": list(train_data.x.shape[1:]), "num_classes": train_data.num_classes,
                         **({"scaler": scaler.state_dict()} if scaler is not None else {})}, out / CHECKPOINT)
    complete = stop == optim.epochs
    result: dict[str, Any] = {"config": config.to_dict(), "complete": complete, "epochs_done": stop,
                              "world_size": env.world, "device": str(device), "threads": torch.get_num_threads(),
                              "autocast": str(amp).removeprefix("torch.") if amp is not None else None,
                              "history": history}
    if complete and test_data is not None and env.main:
        result["eval"] = evaluate(objective.model, config, test_data, group=eval_group)
    if env.main:
        write_text_atomic(out / METRICS, json.dumps(result, indent=2) + "\n")
    if env.world > 1:
        dist.barrier()
    return result


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               index: torch.Tensor, epoch: int, *, grad_clip: float | None = None, where: str = "",
               amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One optimizer step of an objective (a method from [`build`][equican.train.build], or its DDP wrapper).

    Args:
        net: the objective, called as ``net(x, y, index, epoch) -> (loss, stats)``.
        optimizer: steps ``net``'s parameters.
        x: images ``(B, C, H, W)``; y: labels ``(B,)``; index: the samples' dataset indices ``(B,)`` (they seed the
            methods' random elements); epoch: 0-based (staged methods switch on it).
        grad_clip: the largest gradient norm (None: no clipping).
        where: where the step is, for the error message.
        amp: the autocast dtype of the forward pass (None: full precision). Parameters, optimizer state and
            gradients stay float32; canonicalizers solve in float32 inside autocast (see docs/concepts/amp.md).
        scaler: scales the loss for float16 (None: unscaled).

    Returns:
        The step's statistics (``loss`` and the method's own, e.g. the DEQ's ``converged`` fraction).

    Raises:
        NonFiniteError: the loss is NaN or infinite (nothing is stepped).
    """
    with warnings.catch_warnings():
        # A DEQ trained with few iterations rarely meets its tolerance; its converged fraction is in stats.
        warnings.simplefilter("ignore", ConvergenceWarning)
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            loss, stats = net(x, y, index, epoch)
    if not torch.isfinite(loss):
        raise NonFiniteError(f"train: expected a finite loss, got {float(loss)}{' at ' + where if where else ''}; "
                             "lower optim.lr or set optim.grad_clip")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return stats


def _epoch(config: TrainConfig, env: Distributed, device: torch.device, objective: Objective, loader: DataLoader,
           sampler: DistributedSampler, step: Any, scheduler: Any, epoch: int) -> dict[str, float]:
    """One epoch; ``step(x, y, index, epoch, where=...)`` is ``train_step`` bound to the run's net and optimizer."""
    sampler.set_epoch(epoch)
    # torch's global RNG (dropout, stochastic depth) is reseeded from (seed, epoch, rank): resuming at an epoch
    # boundary then replays exactly what an uninterrupted run would have drawn.
    torch.manual_seed(index_generator(config.seed, _TORCH_RNG_STREAM, epoch, env.rank).initial_seed())
    objective.train()
    totals: dict[str, float] = {}
    seen, started = 0, time.perf_counter()
    # Bars only on a terminal (disable=None: tqdm turns itself off when stderr is not a TTY), so a log piped to a
    # file has no carriage returns; the per-epoch line below is written either way.
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.optim.epochs}", unit="batch", leave=False,
               disable=None if config.progress and env.main else True, dynamic_ncols=True)
    for i, (x, y, index) in enumerate(bar, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        stats = step(x, y, index, epoch, where=f"epoch {epoch + 1}, step {i}")
        scheduler.step()
        n = x.shape[0] * (dist.get_world_size() if dist.is_initialized() else 1)
        seen += n
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value * n
        rate = seen / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", img_s=f"{rate:.0f}")
    bar.close()
    seconds = time.perf_counter() - started
    row = {"epoch": epoch + 1, **{k: v / seen for k, v in totals.items()}, "images_per_s": seen / seconds,
           "seconds": seconds, "lr": scheduler.get_last_lr()[0]}
    if env.main:
        # Always, bars or not: one line per epoch, so a log read from a pipe or a file shows the progress.
        extra = "".join(f", {k} {row[k]:.3g}" for k in ("canon", "steps", "converged", "residual") if k in row)
        tqdm.write(f"epoch {epoch + 1}/{config.optim.epochs}: loss {row['loss']:.4f}, "
                   f"{row['images_per_s']:.0f} img/s, {seconds:.1f} s{extra}")
        sys.stdout.flush()
    return row


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(model: torch.nn.Module, config: TrainConfig, test_data: SplitData, *, group: Any = None
             ) -> dict[str, Any]:
    """The configured metrics of ``model`` on ``test_data`` (the first ``config.eval.limit`` samples).

    Returns:
        ``accuracy``, ``invariance_error`` (under ``config.eval``'s group; absent when ``eval.invariance_group`` is
        None and the method uses no group), and for Locally Scaled MNIST
        ``accuracy_unscaled`` (every digit at scale 1) and ``local_scale_error`` (``k = eval.rescalings``);
        for a model with a ``canonicalizer``, its [`canonicalization_report`][equican.metrics.canonicalization_report]
        with ``canon_`` before each key (``pair_ratio`` on two rescalings of each composite);
        ``samples``, the invariance group's repr, and ``nonconverged_batches``: how many evaluation batches raised a
        [`ConvergenceWarning`][equican.errors.ConvergenceWarning].
    """
    ev = config.eval
    group = invariance_group(config) if group is None else group  # still None for a group-less method
    n = test_data.x.shape[0] if ev.limit is None else min(ev.limit, test_data.x.shape[0])
    x, y = test_data.x[:n], test_data.y[:n]
    out: dict[str, Any] = {"samples": n}
    if group is not None:
        out["invariance_group"] = repr(group)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        with metrics.solver_statistics(model) as record:
            out["accuracy"] = metrics.accuracy(model, (x, y), batch_size=ev.batch_size)
        # The DEQ's converged fraction and mean residual on the test inputs, at the evaluation settings.
        out.update({f"solver_{k}": v for k, v in metrics.summarize_solver_statistics(record).items()})
        canon = getattr(model, "canonicalizer", None)
        canon = canon if isinstance(canon, Canonicalizer) else None
        if group is not None:
            out["invariance_error"] = metrics.invariance_error(model, (x,), group, seed=ev.seed,
                                                               batch_size=ev.batch_size)
        pairs = None
        if isinstance(test_data.source, LocalScaleMNIST):
            source = test_data.source
            reference = torch.stack([source.reference(i) for i in range(n)])
            rescaled = torch.stack([source.rescalings(i, ev.rescalings) for i in range(n)])
            out["accuracy_unscaled"] = metrics.accuracy(model, (reference, y), batch_size=ev.batch_size)
            out["local_scale_error"] = metrics.local_scale_error(model, (reference, rescaled),
                                                                 batch_size=max(ev.batch_size // ev.rescalings, 1))
            # The data's own nuisance: two independent rescalings of each composite.
            pairs = (rescaled[:, 0], rescaled[:, 1]) if ev.rescalings >= 2 else None
        if canon is not None:
            report = metrics.canonicalization_report(canon, (x,), pairs=pairs, seed=ev.seed, batch_size=ev.batch_size)
            out.update({f"canon_{key}": value for key, value in report.items()})
    out["nonconverged_batches"] = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return out


def evaluate_checkpoint(path: str | os.PathLike[str], *,
                        overrides: TrainConfig | list[str] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on its run's test split (``equican evaluate``).

    Args:
        path: a ``checkpoint.pt``.
        overrides: a config whose ``data`` and ``eval`` sections replace the checkpoint's (to evaluate on other
            data or with other metrics settings), or ``data.*`` / ``eval.*`` override strings applied to the
            checkpoint's config (``["eval.limit=4"]``); None keeps the checkpoint's.

    Returns:
        [`evaluate`][equican.train.evaluate]'s dict plus ``checkpoint`` and ``epoch``.
    """
    config, objective, payload = load_checkpoint(path)
    if overrides is not None and not isinstance(overrides, TrainConfig):
        overrides = apply_overrides(config, evaluation_overrides(overrides))
    if overrides is not None:
        config = config.replace(data=overrides.data, eval=overrides.eval)
    device = device_for(config.device, Distributed())
    objective.to(device)
    result = evaluate(objective.model, config, load_split(config.data, "test"))
    return {"checkpoint": str(path), "epoch": int(payload["epoch"]), **result}
