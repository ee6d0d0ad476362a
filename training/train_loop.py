"""CLIP pretraining on Ray Train workers (Train V2 API). The only module that imports ray.train.

`run_training(config)` builds a TorchTrainer from the spec's scaling section and runs
`train_loop_per_worker` on every worker: gloo on CPU, NCCL on GPU. A worker that dies is
replaced (FailureConfig(max_failures)) and every worker resumes from the last checkpoint:
model, optimizer, schedule step, data position and RNG state, so the step count is continuous
and no sample is repeated or skipped. Checkpoints are Ray Train checkpoints: rank 0 attaches the
state to `ray.train.report`, Ray persists it under `storage_path/<run name>/step-NNNNNNN`
(`scaling.storage_path`, default `<output_dir>/ray`; shared or cloud storage on a cluster) and
keeps the last two (CheckpointConfig), and `ray.train.get_checkpoint()` hands it back after a
failure or when the same run is started again (Ray's run snapshot in storage). The last
checkpoint carries the final zero-shot metrics, which are the Result's metrics.

Paths in `config` are absolute: Ray Train V2 workers change directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from training.checkpoint import load_weights
from training.data import LoaderState, ShardLoader
from training.loss import clip_loss, siglip_loss
from training.model import CLIP, CLIPConfig
from training.tokenizer import Tokenizer


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


def state_checkpoint(folder: Path, step: int, model, opt, loader: ShardLoader, extra: dict) -> Path:
    """The training state as one torch file (plain tensors and dicts: it loads with weights_only=True)."""
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "loader": loader.state().to_dict(),
                "rng": rng_state(), "extra": extra}, folder / "state.pt")
    return folder


def report(metrics: dict, rank: int, step: int | None = None, model=None, opt=None, loader=None, extra: dict | None = None) -> None:
    """ray.train.report on every worker (it is a barrier); with `step`, rank 0 attaches the training
    state as a Ray Train checkpoint, which Ray persists to storage_path and prunes (num_to_keep)."""
    import ray.train

    if step is None or rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="openwit-ckpt-") as d:
        state_checkpoint(Path(d), step, model, opt, loader, extra or {})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=f"step-{step:07d}")


def load_checkpoint() -> dict | None:
    """The latest checkpoint Ray Train knows for this run: after a worker failure, or when the
    same run (storage_path/name) is started again."""
    import ray.train

    ck = ray.train.get_checkpoint()
    if ck is None:
        return None
    with ck.as_directory() as d:
        return torch.load(Path(d) / "state.pt", weights_only=True, map_location="cpu")


def rng_state() -> dict:
    """CPU and (when present) every CUDA generator, for an exact resume."""
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def train_step(model, opt, micro: list[tuple[torch.Tensor, torch.Tensor]], loss_name: str, device, amp_dtype, grad_clip):
    """One optimizer step over `micro` batches. With several micro-batches the features are
    cached first (no grad), then each micro-batch is recomputed with grad against the whole
    cache, so the contrastive batch really is the large batch (open_clip's accum_freq)."""
    model.train()
    m = model.module if hasattr(model, "module") else model
    ac = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)
    scale = m.logit_scale.exp().clamp(max=100)
    lossf = (lambda i, t, s: clip_loss(i, t, s)) if loss_name == "clip" else (lambda i, t, s: siglip_loss(i, t, s, m.logit_bias))
    if len(micro) == 1:
        img, txt = micro[0]
        with ac:
            fi, ft, s = model(img.to(device), txt.to(device))
            loss = lossf(fi.float(), ft.float(), s)
        loss.backward()
    else:
        with torch.no_grad(), ac:
            cache = [model(i.to(device), t.to(device))[:2] for i, t in micro]
        for j, (img, txt) in enumerate(micro):
            # DDP all-reduces gradients on the last micro-batch only (open_clip's accum_freq does the same)
            sync = j == len(micro) - 1 or not hasattr(model, "no_sync")
            with (contextlib.nullcontext() if sync else model.no_sync()):
                with ac:
                    fi, ft, s = model(img.to(device), txt.to(device))
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


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    from training import tracking

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tr = config["train"]
    run_dir = Path(config["run_dir"])
    device = torch.device("cuda", ctx.get_local_rank()) if config["use_gpu"] and torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    amp_dtype = torch.bfloat16 if (tr["precision"] == "bf16" and device.type == "cuda") else None

    tok = Tokenizer.load(config["tokenizer"], config["model"]["text_cfg"]["context_length"])
    cfg = CLIPConfig.from_dict(config["model"])
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    torch.manual_seed(tr["seed"])
    model = CLIP(cfg).to(device)
    if tr["loss"] == "siglip":
        model.logit_scale.data.fill_(math.log(10))
        model.add_logit_bias(-10.0)
    if config.get("init_weights"):  # fine-tuning; a resumed run then overwrites these weights
        load_weights(model, load_file(config["init_weights"], device=str(device)), f"init_from {config['init_weights']}")
    if config.get("init_image"):  # another model's image tower (Chinese-CLIP stage 1: CLIP's)
        visual = {k.removeprefix("visual."): v for k, v in load_file(config["init_image"], device=str(device)).items() if k.startswith("visual.")}
        model.visual.load_state_dict(visual, strict=True)
    if config.get("init_text_bert"):  # a pretrained Chinese BERT (RoBERTa-wwm-ext, RBT3)
        from training.convert import load_hf_bert

        load_hf_bert(model, config["init_text_bert"])
    if config.get("lock_image"):  # LiT: no image-tower parameter trains, BatchNorm statistics stay
        model.lock_image_tower()
    if tr["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    # the same initial weights on every rank (seed), then a stream of its own per rank (seed + rank,
    # as open_clip does) so that patch dropout and augmentation differ between workers
    torch.manual_seed(tr["seed"] + rank)
    opt = torch.optim.AdamW(param_groups(model, tr["weight_decay"]), lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])

    state = load_checkpoint()
    step, loader_state, trained_s, finished = 0, None, 0.0, False
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        loader_state = LoaderState.from_dict(state["loader"])
        set_rng_state(state["rng"])
        trained_s = float(state["extra"].get("train_seconds", 0.0))  # the time budget spans restarts
        finished = bool(state["extra"].get("finished", False))  # training ended; only evaluation was left
        if rank == 0:
            print(f"resuming from step {step} (epoch {loader_state.epoch}, block {loader_state.block}, row {loader_state.offset})", flush=True)
    per_worker = tr["batch_size"] // (world * tr["accum_steps"])
    loader = ShardLoader(config["build"], tok, config["image_size"], per_worker, tr["seed"], rank, world, loader_state,
                         subset=config["subset"], threads=tr["loader_threads"], prefetch=tr["prefetch_batches"],
                         shuffle_units=tr["shuffle_units"], pin_memory=device.type == "cuda")
    train_model = ray.train.torch.prepare_model(model) if world > 1 else model
    if tr["compile"]:
        train_model = torch.compile(train_model)

    tracker = tracking.WorkerTracker(config["mlflow"]) if rank == 0 else None
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        nodes = [None] * world
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    if tracker:  # where the workers ran (a cluster's nodes), for the run's record
        tracker.set_tags({"ray.worker_nodes": ",".join(nodes), "ray.num_nodes": str(len(set(nodes)))})
    kill_at = int(os.environ.get("OPENWIT_TEST_KILL_AT_STEP", "-1"))
    t_start, wait, t_window, n_window, paused = time.time() - trained_s, 0.0, time.time(), 0, 0.0
    while step < tr["steps"] and not finished:
        t0 = time.time()
        micro = [loader.next_batch() for _ in range(tr["accum_steps"])]
        wait += time.time() - t0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tr["lr"], tr["warmup_steps"], tr["steps"])
        loss, scale = train_step(train_model, opt, micro, tr["loss"], device, amp_dtype, tr["grad_clip"])
        step += 1
        n_window += tr["batch_size"]
        if rank == world - 1 and step == kill_at and not (run_dir / "killed-once").exists():
            (run_dir / "killed-once").write_text(str(step))  # test hook: a worker dies mid-run
            os.kill(os.getpid(), signal.SIGKILL)
        if step % tr["log_every"] == 0 or step == tr["steps"]:
            elapsed = time.time() - t_window
            metrics = {"train/loss": loss.item(), "train/lr": opt.param_groups[0]["lr"], "train/logit_scale": scale.item(),
                       "train/samples_per_s": n_window / max(elapsed, 1e-9), "train/data_wait_fraction": wait / max(elapsed, 1e-9),
                       "train/epoch": loader.st.epoch}
            if tracker:
                tracker.log_metrics(metrics, step)
                line = progress_line(step, tr["steps"], metrics, time.time() - t_start - paused)
                print(line, flush=True)
                with open(run_dir / "progress.log", "a") as f:  # the driver relays it to the Prefect logs
                    f.write(line + "\n")
            t_window, wait, n_window = time.time(), 0.0, 0
        stop = _out_of_time(t_start, tr.get("max_minutes"), world, device)
        if step % tr["checkpoint_every"] == 0 and step < tr["steps"] and not stop:  # the last one comes with the final metrics
            report({"step": step, "train/loss": loss.item()}, rank, step, model, opt, loader,
                   {"train_seconds": time.time() - t_start, "finished": False})
        if tracker and tr["eval_every"] and step % tr["eval_every"] == 0 and step < tr["steps"]:
            t0 = time.time()
            tracker.evaluate(model, tok, config["eval_suites"], config["image_size"], step)
            paused += time.time() - t0
        if stop:
            break
    loader.close()
    final = {"step": step}
    if tracker:
        final.update(tracker.evaluate(model, tok, config["eval_suites"], config["image_size"], step, final=True))
        tracker.finish(model, tok, run_dir, step, loader.st.skipped)
    # the last checkpoint carries the final metrics (the Result's metrics); a rerun of a finished
    # run only evaluates again and keeps the checkpoint it had
    report(final, rank, None if finished else step, model, opt, loader, {"train_seconds": time.time() - t_start, "finished": True})


def progress_line(step: int, total: int, m: dict, elapsed: float) -> str:
    eta = elapsed / max(step, 1) * (total - step)
    return (f"step {step}/{total} ({100 * step / total:.0f}%) loss {m['train/loss']:.3f} {m['train/samples_per_s']:.0f} samples/s "
            f"data-wait {100 * m['train/data_wait_fraction']:.0f}% eta {int(eta // 60)}m{int(eta % 60):02d}s")


def _out_of_time(t_start: float, max_minutes: float | None, world: int, device) -> bool:
    """Rank 0's clock decides, so every worker stops at the same step."""
    flag = torch.tensor([1.0 if max_minutes and time.time() - t_start > max_minutes * 60 else 0.0], device=device)
    if world > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


@contextlib.contextmanager
def ray_session(scaling: dict, ray_address: str | None):
    """Ray for the duration of the block: attach to `ray_address`, or start a local single-node Ray
    sized for the workers and shut it down after. Inside an outer session (a staged run keeps one
    Ray for all its stages: startup costs ~30 s) it does nothing."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    if ray.is_initialized():
        yield
        return
    # RAY_TRAIN_ENABLE_PRINT_PATCH=0: Ray Train V2 otherwise sends each print both to the
    # worker's stdout and to its logger, and the driver shows every progress line twice
    env = {"env_vars": {**{k: v for k, v in os.environ.items() if k.startswith("OPENWIT_")}, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"},
           "worker_process_setup_hook": "training.train_loop.quiet_ray_logs"}
    if ray_address:
        ray.init(address=ray_address, runtime_env=env)
    else:
        # "local": always a new single-node Ray, never a stale cluster that a crashed run left
        # registered in /tmp/ray/ray_current_cluster
        ray.init(address="local", num_cpus=max(2, int(scaling["workers"] * scaling["resources_per_worker"].get("CPU", 1))) + 1,
                 include_dashboard=False, runtime_env=env)
    try:
        yield
    finally:
        ray.shutdown()  # stop the cluster this session started (its agents would outlive the flow)


def run_training(config: dict, scaling: dict, ray_address: str | None, storage: str) -> dict:
    """Start (or attach to) Ray and run the TorchTrainer; returns the final metrics (those of the
    last checkpoint). Checkpoints live in `storage`/<run name> (shared or cloud storage on a
    cluster); Ray Train keeps the last two and resumes from the latest when the same run starts again."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with ray_session(scaling, ray_address):
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=config,
            torch_config=TorchConfig(backend="nccl" if scaling["use_gpu"] else "gloo"),
            scaling_config=ScalingConfig(num_workers=scaling["workers"], use_gpu=scaling["use_gpu"],
                                         resources_per_worker=scaling["resources_per_worker"],
                                         placement_strategy=scaling.get("placement_strategy", "PACK")),
            run_config=RunConfig(name=config["run_name"], storage_path=storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 failure_config=FailureConfig(max_failures=scaling["max_failures"])),
        )
        result = trainer.fit()
    return dict(result.metrics or {})


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
