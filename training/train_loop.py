"""CLIP pretraining on Ray Train workers (Train V2 API). The only module that imports ray.train.

    run_training(cfg: TrainConfig) -> final metrics

`run_training` starts (or attaches to) Ray and runs `train_loop_per_worker(cfg)` on every worker:
gloo on CPU, NCCL on GPU; a staged run (Chinese-CLIP) runs its stages in order, each as its own
MLflow run nested under the run, in one Ray session. A worker that dies is replaced
(FailureConfig(max_failures)) and every worker resumes from the last checkpoint, so the step count
is continuous and no sample is repeated or skipped, on every rank:

    storage/<run>/step-NNNNNNN/state.pt      rank 0: model, optimizer, step, world size, budget used
    storage/<run>/step-NNNNNNN/rank-R.pt     every rank R: its loader position and its RNG (CPU, CUDA, numpy)

Each rank reports its own file with `ray.train.report`, which merges them into one checkpoint
directory; Ray persists it under `checkpoint.storage` (shared or cloud storage on a cluster) and
keeps the last two. Checkpoints load with `weights_only=True`. The last checkpoint carries the
final evaluation, which are the Result's metrics.

The step never waits on the GPU for bookkeeping: loss, logit scale and the time budget are read on
the host every `log_every` steps only (rank 0's clock decides, so every rank stops at the same step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from training.checkpoint import load_weights
from training.config import TrainConfig
from training.data.images import to_device
from training.data.loader import ShardLoader
from training.data.shares import LoaderState
from training.loss import clip_loss, siglip_loss
from training.model import CLIP
from training.run_dir import RunDir
from training.tokenizer import Tokenizer


# ----------------------------------------------------------------------------- model and optimizer
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no weight decay on gains, biases, norms and the logit scale."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: TrainConfig, tok: Tokenizer, device: torch.device) -> CLIP:
    """The model with its initial weights: seeded (the same on every rank), then `cfg.init`."""
    torch.manual_seed(cfg.schedule.seed)
    mcfg = dataclasses.replace(cfg.model, text=dataclasses.replace(cfg.model.text, vocab_size=tok.vocab_size, eot_id=tok.eot_id))
    model = CLIP(mcfg).to(device)
    if cfg.optim.loss == "siglip":
        model.logit_scale.data.fill_(math.log(10))
        model.add_logit_bias(-10.0)
    if cfg.init.weights:  # fine-tuning, or a later stage; a resumed run then overwrites these weights
        load_weights(model, load_file(str(cfg.init.weights), device=str(device)), f"init_from {cfg.init.weights}")
    if cfg.init.image_tower:  # another model's image tower (Chinese-CLIP stage 1: CLIP's)
        state = load_file(str(cfg.init.image_tower), device=str(device))
        model.visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}, strict=True)
    if cfg.init.text_bert:  # a pretrained Chinese BERT (RoBERTa-wwm-ext, RBT3)
        from training.convert import load_hf_bert

        load_hf_bert(model, cfg.init.text_bert)
    if cfg.optim.lock_image:  # LiT: no image-tower parameter trains, BatchNorm statistics stay
        model.lock_image_tower()
    if cfg.schedule.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                             fused=device.type == "cuda")  # one kernel per step instead of one per tensor


# ----------------------------------------------------------------------------- one step
def train_step(model, opt, micro: list[tuple[torch.Tensor, torch.Tensor]], loss_name: str, device, amp_dtype, grad_clip):
    """One optimizer step over `micro` batches of (uint8 images [B,S,S,3], tokens), normalised on
    `device`. With several micro-batches the features are cached first (no grad), then each
    micro-batch is recomputed with grad against the whole cache, so the contrastive batch really
    is the large batch (open_clip's accum_freq). Returns (loss, logit scale) as device tensors."""
    model.train()
    m = model.module if hasattr(model, "module") else model
    m = getattr(m, "_orig_mod", m)  # torch.compile's wrapper
    ac = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)
    scale = m.logit_scale.exp().clamp(max=100)
    lossf = (lambda i, t, s: clip_loss(i, t, s)) if loss_name == "clip" else (lambda i, t, s: siglip_loss(i, t, s, m.logit_bias))
    micro = [(to_device(img, device), txt.to(device, non_blocking=True)) for img, txt in micro]
    if len(micro) == 1:
        img, txt = micro[0]
        with ac:
            fi, ft, s = model(img, txt)
            loss = lossf(fi.float(), ft.float(), s)
        loss.backward()
    else:
        with torch.no_grad(), ac:
            cache = [model(i, t)[:2] for i, t in micro]
        for j, (img, txt) in enumerate(micro):
            # DDP all-reduces gradients on the last micro-batch only (open_clip's accum_freq does the same)
            sync = j == len(micro) - 1 or not hasattr(model, "no_sync")
            with (contextlib.nullcontext() if sync else model.no_sync()):
                with ac:
                    fi, ft, s = model(img, txt)
                    all_i = torch.cat([c[0] if k != j else fi for k, c in enumerate(cache)]).float()
                    all_t = torch.cat([c[1] if k != j else ft for k, c in enumerate(cache)]).float()
                    loss = lossf(all_i, all_t, s)
                loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    m.clamp_logit_scale()  # CLIP: the temperature never exceeds 100
    return loss.detach(), scale.detach()


# ----------------------------------------------------------------------------- per-rank state
def rng_state(device: torch.device) -> dict:
    """This rank's generators: CPU, its own CUDA device, numpy's global one (as tensors: weights_only)."""
    _kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                                    "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in st and device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda"], device)


def rng_fingerprint(device: torch.device) -> int:
    """A short digest of this rank's generator states (recorded with its samples)."""
    import zlib

    blob = torch.get_rng_state().numpy().tobytes() + (torch.cuda.get_rng_state(device).numpy().tobytes() if device.type == "cuda" else b"")
    return zlib.crc32(blob)


def report(metrics: dict, rank: int, step: int | None, model=None, opt=None, loader: ShardLoader | None = None,
           device: torch.device | None = None, world: int = 1, extra: dict | None = None) -> None:
    """ray.train.report on every worker (a barrier). With `step`, every rank attaches its part of
    the checkpoint (rank 0 also the model and optimizer); Ray merges them into one directory."""
    import ray.train

    if step is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="openwit-ckpt-") as d:
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "world": world,
                        "extra": extra or {}}, Path(d) / "state.pt")
        torch.save({"loader": loader.state().to_dict(), "rng": rng_state(device)}, Path(d) / f"rank-{rank}.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=f"step-{step:07d}")


def load_checkpoint(rank: int) -> tuple[dict, dict | None] | None:
    """(rank 0's state, this rank's state or None) of the latest checkpoint Ray Train knows for this
    run: after a worker failure, or when the same run (storage/name) is started again."""
    import ray.train

    ck = ray.train.get_checkpoint()
    if ck is None:
        return None
    with ck.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")
        mine = Path(d) / f"rank-{rank}.pt"
        return state, torch.load(mine, weights_only=True, map_location="cpu") if mine.exists() else None


def resume(model, opt, rank: int, world: int, device: torch.device) -> tuple[int, LoaderState | None, dict]:
    """(step, this rank's loader position, extra) from the latest checkpoint, restoring weights,
    optimizer and this rank's RNG; (0, None, {}) for a fresh run."""
    found = load_checkpoint(rank)
    if found is None:
        return 0, None, {}
    state, mine = found
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    step, extra = int(state["step"]), dict(state["extra"])
    if mine is None or int(state.get("world", world)) != world:
        # another number of workers (or a checkpoint of an older openwit): the shares differ, so
        # this rank starts its share of the epoch over; the position is not exact
        print(f"rank {rank}: the checkpoint holds no position for rank {rank} of {world} workers; its share of the "
              "epoch starts over", flush=True)
        torch.manual_seed(step * 1000 + rank)
        return step, None, extra
    set_rng_state(mine["rng"], device)
    loader_state = LoaderState.from_dict(mine["loader"])
    if rank == 0:
        print(f"resuming from step {step} (rank 0 at epoch {loader_state.epoch}, block {loader_state.block}, "
              f"row {loader_state.offset})", flush=True)
    return step, loader_state, extra


# ----------------------------------------------------------------------------- the worker
class _Clock:
    """Wall time against the budget, and the logging window's samples and data wait (host only)."""

    def __init__(self, trained_s: float):
        self.start = time.time() - trained_s
        self.paused = 0.0  # evaluation time, not counted in the ETA
        self.window_start, self.wait, self.samples = time.time(), 0.0, 0

    def window(self) -> tuple[float, float]:
        """(samples/s, data-wait fraction) since the last call."""
        elapsed = max(time.time() - self.window_start, 1e-9)
        out = self.samples / elapsed, self.wait / elapsed
        self.window_start, self.wait, self.samples = time.time(), 0.0, 0
        return out


def _out_of_time(clock: _Clock, max_minutes: float | None, world: int, device) -> bool:
    """Rank 0's clock decides, so every worker stops at the same step (called at log steps only)."""
    over = bool(max_minutes) and time.time() - clock.start > max_minutes * 60
    if world == 1:
        return over
    flag = torch.tensor([1.0 if over else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def train_loop_per_worker(cfg: TrainConfig) -> None:
    import ray.train

    from training import tracking

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    sched, run = cfg.schedule, RunDir(cfg.run_dir)
    device = torch.device("cuda", ctx.get_local_rank()) if cfg.scaling.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    amp_dtype = torch.bfloat16 if (sched.precision == "bf16" and device.type == "cuda") else None

    tok = Tokenizer.load(cfg.data.tokenizer, cfg.model.text.context_length)
    model = build_model(cfg, tok, device)
    # the same initial weights on every rank (seed), then a stream of its own per rank (seed + rank,
    # as open_clip does) so that patch dropout and augmentation differ between workers
    torch.manual_seed(sched.seed + rank)
    np.random.seed(sched.seed + rank)
    opt = make_optimizer(model, cfg, device)
    step, loader_state, extra = resume(model, opt, rank, world, device)
    finished = bool(extra.get("finished", False))  # training ended; only evaluation was left
    per_worker = sched.batch_size // (world * sched.accum_steps)
    loader = ShardLoader(cfg.data.build, tok, cfg.data.image_size, per_worker, sched.seed, rank, world, loader_state,
                         subset=cfg.data.subset, workers=cfg.data.loader_workers, prefetch=cfg.data.prefetch_batches,
                         shuffle_units=cfg.data.shuffle_units, pin_memory=device.type == "cuda")
    train_model = ray.train.torch.prepare_model(model) if world > 1 else model
    if sched.compile:
        train_model = torch.compile(train_model)
    tracker = tracking.WorkerTracker(cfg.tracking) if rank == 0 else None
    if tracker:  # where the workers ran (a cluster's nodes), for the run's record
        tracker.set_tags(_worker_nodes(world))
    elif world > 1:
        _worker_nodes(world)
    clock = _Clock(float(extra.get("train_seconds", 0.0)))  # the time budget spans restarts
    while step < sched.steps and not finished:
        t0 = time.time()
        micro = [loader.next_batch() for _ in range(sched.accum_steps)]
        clock.wait += time.time() - t0
        if cfg.data.record_samples:
            run.record_samples(rank, step + 1, loader.last_uids, rng_fingerprint(device))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.optim.lr, sched.warmup_steps, sched.steps)
        loss, scale = train_step(train_model, opt, micro, cfg.optim.loss, device, amp_dtype, cfg.optim.grad_clip)
        step += 1
        clock.samples += sched.batch_size
        stop = False
        if step % sched.log_every == 0 or step == sched.steps:
            _log_progress(tracker, run, step, sched.steps, loss, scale, opt, loader, clock)
            stop = _out_of_time(clock, sched.max_minutes, world, device)
        if step % cfg.checkpoint.every == 0 and step < sched.steps and not stop:  # the last one comes with the final metrics
            report({"step": step}, rank, step, model, opt, loader, device, world,
                   {"train_seconds": time.time() - clock.start, "finished": False})
        if tracker and sched.eval_every and step % sched.eval_every == 0 and step < sched.steps:
            t0 = time.time()
            tracker.evaluate(model, tok, cfg.eval, cfg.data.image_size, step)
            clock.paused += time.time() - t0
        if stop:
            break
    loader.close()
    final = {"step": step}
    if tracker:
        final.update(tracker.evaluate(model, tok, cfg.eval, cfg.data.image_size, step, final=True))
        tracker.finish(model, tok, run.model, step, loader.state().skipped)
    # the last checkpoint carries the final metrics (the Result's metrics); a rerun of a finished
    # run only evaluates again and keeps the checkpoint it had
    report(final, rank, None if finished else step, model, opt, loader, device, world,
           {"train_seconds": time.time() - clock.start, "finished": True})


def _worker_nodes(world: int) -> dict[str, str]:
    import ray

    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        nodes = [None] * world
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    return {"ray.worker_nodes": ",".join(nodes), "ray.num_nodes": str(len(set(nodes)))}


def _log_progress(tracker, run: RunDir, step: int, total: int, loss, scale, opt, loader: ShardLoader, clock: _Clock) -> None:
    if tracker is None:
        return
    rate, wait = clock.window()
    metrics = {"train/loss": loss.item(), "train/lr": opt.param_groups[0]["lr"], "train/logit_scale": scale.item(),
               "train/samples_per_s": rate, "train/data_wait_fraction": wait, "train/epoch": loader.state().epoch}
    tracker.log_metrics(metrics, step)
    line = progress_line(step, total, metrics, time.time() - clock.start - clock.paused)
    print(line, flush=True)
    run.append_progress(line)  # the flow relays it to the Prefect logs


def progress_line(step: int, total: int, m: dict, elapsed: float) -> str:
    eta = elapsed / max(step, 1) * (total - step)
    return (f"step {step}/{total} ({100 * step / total:.0f}%) loss {m['train/loss']:.3f} {m['train/samples_per_s']:.0f} samples/s "
            f"data-wait {100 * m['train/data_wait_fraction']:.0f}% eta {int(eta // 60)}m{int(eta % 60):02d}s")


# ----------------------------------------------------------------------------- the driver
@contextlib.contextmanager
def ray_session(cfg: TrainConfig):
    """Ray for the duration of the block: attach to `scaling.address`, or start a local single-node
    Ray sized for the workers and shut it down after. Inside an outer session (a staged run keeps
    one Ray for all its stages: startup costs ~30 s) it does nothing."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    if ray.is_initialized():
        yield
        return
    # RAY_TRAIN_ENABLE_PRINT_PATCH=0: Ray Train V2 otherwise sends each print both to the
    # worker's stdout and to its logger, and the driver shows every progress line twice
    env = {"env_vars": {**{k: v for k, v in os.environ.items() if k.startswith("OPENWIT_")}, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"},
           "worker_process_setup_hook": "training.train_loop.quiet_ray_logs"}
    sc = cfg.scaling
    if sc.address:
        ray.init(address=sc.address, runtime_env=env)
    else:
        # "local": always a new single-node Ray, never a stale cluster that a crashed run left
        # registered in /tmp/ray/ray_current_cluster
        ray.init(address="local", num_cpus=max(2, int(sc.workers * sc.cpus_per_worker)) + 1, include_dashboard=False, runtime_env=env)
    try:
        yield
    finally:
        ray.shutdown()  # stop the cluster this session started (its agents would outlive the flow)


def fit(cfg: TrainConfig) -> dict:
    """One Ray Train run of `cfg` (no stages); returns the final metrics (those of the last checkpoint).
    Checkpoints live in `cfg.storage`/<name>; Ray Train keeps the last `checkpoint.keep` and resumes
    from the latest when the same run starts again."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    sc = cfg.scaling
    with ray_session(cfg):
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=cfg,
            torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=sc.workers, use_gpu=sc.use_gpu, resources_per_worker=dict(sc.resources_per_worker),
                                         placement_strategy=sc.placement_strategy),
            run_config=RunConfig(name=cfg.name, storage_path=str(cfg.storage),
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                                 failure_config=FailureConfig(max_failures=sc.max_failures)),
        )
        result = trainer.fit()
    return dict(result.metrics or {})


def run_training(cfg: TrainConfig, log=print) -> dict:
    """Train `cfg`: one fit, or each stage in order (finished stages skipped), in one Ray session.
    Returns the final metrics; a staged run's are its last stage's, also logged to the parent run."""
    if not cfg.stages:
        return fit(cfg)
    from training import tracking

    run = RunDir(cfg.run_dir)
    todo = [i for i, st in enumerate(cfg.stages) if run.stage(i, st.name).stage_metrics is None]
    with ray_session(cfg) if todo else contextlib.nullcontext():
        for i, st in enumerate(cfg.stages):
            stage_dir = run.stage(i, st.name).create()
            if i not in todo:
                log(f"stage {i + 1} ({st.name}) finished earlier; skipping it")
                continue
            previous = run.stage(i - 1, cfg.stages[i - 1].name).model / "model.safetensors" if i else None
            if previous is not None and not previous.exists():
                raise RuntimeError(f"stage {st.name} starts from {previous}, which stage {cfg.stages[i - 1].name} has not written")
            run_id = tracking.open_stage_run(cfg.tracking, cfg.name, i, st, stage_dir.mlflow_run_id)
            stage_dir.set_mlflow_run_id(run_id)
            log(f"stage {i + 1}/{len(cfg.stages)} ({st.name}): {st.steps} steps" + (", image tower locked" if st.lock_image else "")
                + f"; MLflow run {run_id}")
            try:
                metrics = fit(cfg.for_stage(i, stage_dir.path, run_id, previous))
            except BaseException as e:
                tracking.end_run(cfg.tracking.uri, run_id, tracking.end_status(e))
                raise
            stage_dir.mark_stage_done(metrics)
            tracking.end_run(cfg.tracking.uri, run_id, "FINISHED")
    metrics = run.stage(len(cfg.stages) - 1, cfg.stages[-1].name).stage_metrics
    tracking.log_final(cfg.tracking.uri, cfg.tracking.run_id, metrics)
    return metrics


def quiet_ray_logs() -> None:
    """Ray workers' setup hook. Without a dashboard (the local single-node Ray this flow starts has
    none) Ray Train's PlacementGroupCleaner cannot reach the State API and warns every few
    seconds that it cannot; the warning says nothing about training."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def latest_checkpoint(storage: Path, run_name: str) -> Path | None:
    """The checkpoint a rerun of this run resumes from: the newest one registered in Ray Train's run
    snapshot (None before the first one). A folder written but not yet registered when the process
    died is not it: Ray registers a checkpoint only after its files are written."""
    import json

    snapshot = storage / run_name / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):
        return None
    return storage / run_name / latest["checkpoint_dir_name"] if latest else None
