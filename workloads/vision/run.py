"""The `vision` workload, DeiT-LT: `run_vision(config, context)` -> ExitCode.

Launch like every workload (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/deit-lt \\
        torchrun --nproc-per-node 2 -m carina.workloads

with spec {"kind": "vision", "config": {"model": {"preset": "tiny"}, "data": {...}}}.

One job, two phases, one step counter (so the platform sees one run from 0 to the total):

1. teacher, steps 1..T (T = teacher.epochs · steps per epoch): the ResNet learns the
   long-tailed training set from weak views, with SAM when `teacher.sam`. At step T its
   weights go to `<checkpoint URI>/teacher/step-T` (the usual checkpoint format), the
   teacher's final checkpoint, and the phase's own checkpoints under the root are dropped.
2. student, steps T+1..T+S: the student phase loads the teacher's final checkpoint and trains
   the DeiT, its class token on the ground truth and its distillation token on the teacher's
   argmax of the same view (`losses.py`), with DRW late in the phase. A plain ViT (distill
   off) has only this phase.

Checkpoints under the root (`step-N/`) hold the current phase's model and optimizer; the
manifest's trainer state says which phase. A restart, after SIGKILL or preemption, finds its
phase from the teacher's final checkpoint (present: the student phase) and resumes from the
newest checkpoint of that phase, through the run loop every workload shares
(`runtime/loop.py`: interval saves, SIGTERM saves then exits 75, telemetry). At the end the
evaluation report (`report.json`, `report.md`) goes to the root, next to the checkpoints.

Data parallel (DDP, gloo on CPUs, one rank per GPU): each rank takes its share of every
batch; `batchSize` must be a multiple of WORLD_SIZE. A step's "tokens" are its images.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from carina.workloads.config import ExitCode, Parallelism, VisionArchitecture, VisionConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.data import ShardedSampler
from carina.workloads.errors import WorkerError
from carina.workloads.runtime import checkpoint, distributed
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.loop import (
    RunLoop,
    StepCallback,
    StepReport,
    Workload,
    run_workload,
)
from carina.workloads.runtime.precision import autocast_dtype
from carina.workloads.runtime.schedules import learning_rate
from carina.workloads.runtime.storage import Store, open_store
from carina.workloads.vision.augment import step_generator, strong_view, weak_view
from carina.workloads.vision.datasets import LongTailedData, build_data
from carina.workloads.vision.losses import drw_on, drw_weights, student_loss
from carina.workloads.vision.report import build_report, predict_all, render_markdown
from carina.workloads.vision.resnet import ResNet
from carina.workloads.vision.sam import sam_step
from carina.workloads.vision.vit import DeiT

TEACHER_DIR = "teacher"  # <checkpoint URI>/teacher/step-T: the teacher's final checkpoint
REPORT_JSON, REPORT_MD = "report.json", "report.md"
EVAL_BATCH = 256


class Phase(StrEnum):
    TEACHER = "teacher"
    STUDENT = "student"


def check_world_size(cfg: VisionConfig, world_size: int) -> None:
    """Refuse a batch that does not split evenly across ranks (before any rendezvous)."""
    if cfg.batch_size % world_size:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.batchSize ({cfg.batch_size}) must be a multiple of WORLD_SIZE ({world_size})",
        )


def student_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, norms, tokens and positions do not (as DeiT)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        plain = p.ndim < 2 or name in ("cls_token", "dist_token", "pos_embed")
        (no_decay if plain else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class DeitLtRun(Workload):
    """State of one DeiT-LT run on one rank: the teacher phase, then the student phase."""

    # A checkpoint's manifest records any dataclass as the model's architecture
    # (`dataclasses.asdict`); the run loop's annotation names the decoder's.
    arch: VisionArchitecture  # type: ignore[assignment]

    def __init__(
        self, cfg: VisionConfig, ctx: WorkerContext, d: Dist, preempt: PreemptionFlag
    ) -> None:
        check_world_size(cfg, d.world_size)
        self.cfg, self.ctx, self.d = cfg, ctx, d
        size = cfg.model.resolve(in_channels=1, num_classes=2, dist_token=True).image_size
        self.data: LongTailedData = build_data(cfg.data, size)
        self.distill = cfg.distill.enabled
        self.arch = cfg.model.resolve(
            in_channels=int(self.data.train.images.shape[1]),
            num_classes=self.data.train.classes,
            dist_token=self.distill,
        )
        self.steps_per_epoch = math.ceil(len(self.data.train) / cfg.batch_size)
        self.teacher_steps = cfg.teacher.epochs * self.steps_per_epoch if self.distill else 0
        self.student_steps = cfg.epochs * self.steps_per_epoch
        total = self.teacher_steps + self.student_steps
        self.loop = RunLoop(self, ctx, d, preempt, total, cfg.log_every)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.student = DeiT(self.arch).to(d.device)
        self.student_ddp = distributed.wrap(self.student, Parallelism.DDP, d)
        self.student_opt = torch.optim.AdamW(
            student_param_groups(self.student, cfg.optimizer.weight_decay),
            lr=cfg.optimizer.lr,
            betas=cfg.optimizer.betas,
            eps=cfg.optimizer.eps,
        )
        self.teacher: ResNet | None = None
        self.teacher_ddp: nn.Module | None = None
        self.teacher_opt: torch.optim.Optimizer | None = None
        if self.distill:
            self.teacher = ResNet(self.arch).to(d.device)
            self.teacher_ddp = distributed.wrap(self.teacher, Parallelism.DDP, d)
            self.teacher_opt = torch.optim.AdamW(
                self.teacher.parameters(),
                lr=cfg.teacher.lr,
                weight_decay=cfg.teacher.weight_decay,
            )
        self.amp = autocast_dtype(cfg.precision, d.device)
        self.step = 0
        self.class_weights = drw_weights(self.data.counts, cfg.distill.drw_beta)
        root = self.loop.store
        self.teacher_store: Store | None = (
            open_store(f"{root.uri.rstrip('/')}/{TEACHER_DIR}") if root is not None else None
        )
        if self.distill and not self._teacher_done():
            self._set_phase(Phase.TEACHER)
        else:
            self._enter_student_phase()
        self.loop.resume()

    # ------------------------------------------------------------ phases

    def _teacher_done(self) -> bool:
        """True once the teacher's final checkpoint is complete (the student phase is on)."""
        store = self.teacher_store
        return store is not None and bool(checkpoint.complete_steps(store))

    def _set_phase(self, phase: Phase) -> None:
        """Point the checkpoints (`raw`, `optimizer`) and the sampler at `phase`."""
        self.phase = phase
        if phase == Phase.TEACHER:
            assert self.teacher is not None
            assert self.teacher_opt is not None
            self.raw, self.optimizer = self.teacher, self.teacher_opt
            seed = self.cfg.seed
        else:
            self.raw, self.optimizer = self.student, self.student_opt
            seed = self.cfg.seed + 1
        self.sampler = ShardedSampler(len(self.data.train), seed, self.d.rank, self.d.world_size)

    def _enter_student_phase(self) -> None:
        """Load the teacher's final checkpoint, drop the teacher's own ones, switch."""
        self.step = max(self.step, self.teacher_steps)
        if self.distill and self.teacher_store is not None:
            assert self.teacher is not None
            ref = checkpoint.load_uri(self.teacher_store.uri, self.teacher)
            self.loop.log("teacher_loaded", step=ref.step, uri=ref.uri)
        root = self.loop.store
        if root is not None and self.d.is_main:
            for step in checkpoint.complete_steps(root):
                try:
                    trainer = checkpoint.read_manifest(root, step).get("trainer", {})
                except WorkerError:
                    continue  # a damaged manifest: the resume passes over it
                if trainer.get("phase") == Phase.TEACHER:
                    root.delete_dir(checkpoint.step_dir(step))
        if self.d.distributed:
            dist.barrier()  # no rank looks for a checkpoint before the teacher's are gone
        if self.teacher is not None:
            self.teacher.eval()
        self._set_phase(Phase.STUDENT)

    def _finish_teacher_phase(self) -> None:
        """Save the teacher's final checkpoint, report its accuracy, start the student phase."""
        assert self.teacher is not None
        assert self.teacher_opt is not None
        if self.teacher_store is not None:
            ref = checkpoint.save(
                self.teacher_store,
                self.step,
                self.teacher,
                self.teacher_opt,
                self.state_dict(),
                self.arch,
                keep=1,
            )
            self.loop.log("teacher_saved", step=ref.step, uri=ref.uri)
        if self.d.is_main:
            acc = self.evaluate()["teacher"]
            self.loop.log("eval", phase=Phase.TEACHER.value, **_rounded(acc))
        self._enter_student_phase()

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The phase and the data position (weights and optimizer are the checkpoint's own)."""
        return {
            "phase": self.phase.value,
            "step": self.step,
            "totalSteps": self.teacher_steps + self.student_steps,
            "teacherSteps": self.teacher_steps,
            "data": self.sampler.state_dict(),
            "seed": self.cfg.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("phase") != self.phase.value:
            raise WorkerError(
                ExitCode.BAD_DATA,
                f"checkpoint of step {state.get('step')} is of the {state.get('phase')} phase, "
                f"this run is in the {self.phase.value} phase",
            )
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["data"])

    # ------------------------------------------------------------ steps

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.d.device.type, dtype=self.amp)

    def start(self) -> None:
        self.loop.log(
            "start",
            phase=self.phase.value,
            step=self.step,
            totalSteps=self.teacher_steps + self.student_steps,
            teacherSteps=self.teacher_steps,
            trainCounts=self.data.counts,
            testImages=len(self.data.test),
            worldSize=self.d.world_size,
            studentParams=self.student.num_params(),
            teacherParams=self.teacher.num_params() if self.teacher is not None else 0,
            device=str(self.d.device),
        )

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the next global batch (images in [0, 1], labels)."""
        idx = torch.tensor(self.sampler.next_indices(self.cfg.batch_size), dtype=torch.long)
        train = self.data.train
        return train.images[idx].to(self.d.device), train.labels[idx].to(self.d.device)

    def train_step(self) -> StepReport:
        """One optimizer step of the current phase on `batchSize` images."""
        total = self.teacher_steps + self.student_steps
        logged = (self.step + 1) % self.cfg.log_every == 0 or self.step + 1 == total
        if self.phase == Phase.TEACHER:
            loss, lr, fields = self._teacher_step()
        else:
            loss, lr, fields = self._student_step(logged)
        self.step += 1
        fields = {"phase": self.phase.value, **fields}
        return StepReport(loss, lr, self.cfg.batch_size, None, fields)

    def _teacher_step(self) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """Cross-entropy on weak views; a SAM step when `teacher.sam`."""
        cfg, teacher = self.cfg, self.teacher_ddp
        assert teacher is not None
        assert self.teacher_opt is not None
        lr = learning_rate(
            self.step, cfg.schedule, cfg.teacher.lr, self.teacher_steps, cfg.batch_size, 1
        )
        for group in self.teacher_opt.param_groups:
            group["lr"] = lr
        images, labels = self._batch()
        g = step_generator(cfg.seed, self.d.rank, self.step)
        x = self.data.normalize(weak_view(images, cfg.augment.shift, g))

        def loss_fn() -> torch.Tensor:
            with self._autocast():
                return F.cross_entropy(teacher(x).float(), labels)

        if cfg.teacher.sam:
            loss = sam_step(teacher, self.teacher_opt, loss_fn, cfg.teacher.rho)
        else:
            loss = loss_fn()
            loss.backward()
            self.teacher_opt.step()
            self.teacher_opt.zero_grad(set_to_none=True)
            loss = loss.detach()
        return loss, lr, {}

    def _student_step(self, logged: bool) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """CE on the class token, hard distillation (DRW-weighted late) on the other."""
        cfg = self.cfg
        step = self.step - self.teacher_steps  # within the phase
        lr = learning_rate(step, cfg.schedule, cfg.optimizer.lr, self.student_steps, 1, 1)
        for group in self.student_opt.param_groups:
            group["lr"] = lr
        images, labels = self._batch()
        g = step_generator(cfg.seed + 1, self.d.rank, self.step)
        if cfg.distill.ood_augmentation:
            mixed = strong_view(images, cfg.augment, g)
            view, targets = mixed.images, mixed.targets(labels, self.arch.num_classes)
        else:
            view = weak_view(images, cfg.augment.shift, g)
            targets = F.one_hot(labels, self.arch.num_classes).float()
        x = self.data.normalize(view)
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                teacher_logits = self.teacher(x)  # the same view the student sees
        epoch = step // self.steps_per_epoch
        drw = cfg.distill.drw and drw_on(epoch, cfg.epochs, cfg.distill.drw_start)
        with self._autocast():
            cls_logits, dist_logits = self.student_ddp(x)
        loss = student_loss(
            cls_logits, dist_logits, targets, teacher_logits, self.class_weights if drw else None
        )
        loss.total.backward()
        if cfg.optimizer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.optimizer.grad_clip)
        self.student_opt.step()
        self.student_opt.zero_grad(set_to_none=True)
        fields: dict[str, Any] = {"drw": drw}
        if logged:
            fields["ce"] = round(float(loss.ce), 5)
            if loss.distill is not None:
                fields["distill"] = round(float(loss.distill), 5)
        return loss.total.detach(), lr, fields

    def after_step(self) -> None:
        """At the teacher's last step: its final checkpoint, then the student phase."""
        if self.phase == Phase.TEACHER and self.step == self.teacher_steps:
            self._finish_teacher_phase()

    # ------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """The report on the balanced held-out set (every head, and the teacher)."""
        test = self.data.test
        images = self.data.normalize(test.images.to(self.d.device))
        self.student.eval()
        student = predict_all(self.student.predict, images, EVAL_BATCH)
        self.student.train()
        teacher_preds = None
        if self.teacher is not None:
            was_training = self.teacher.training
            self.teacher.eval()
            teacher = self.teacher
            teacher_preds = predict_all(lambda x: {"t": teacher(x)}, images, EVAL_BATCH)["t"]
            self.teacher.train(was_training)
        cfg = self.cfg
        d = cfg.distill
        recipe = {
            "distill": d.enabled,
            "teacherSam": self.distill and cfg.teacher.sam,
            "oodAugmentation": d.ood_augmentation,
            "drw": d.enabled and d.drw,
        }
        return build_report(
            student,
            teacher_preds,
            test.labels,
            self.data.counts,
            self.data.groups,
            test.class_names,
            {"recipe": recipe, "seed": cfg.seed, "imbalanceRatio": cfg.data.imbalance_ratio},
        )

    def finish(self) -> None:
        """The evaluation report, next to the checkpoints (global rank 0)."""
        if not self.d.is_main:
            return
        report = self.evaluate()
        root = self.loop.store
        if root is not None:
            root.put_bytes(json.dumps(report, indent=1).encode(), REPORT_JSON)
            root.put_bytes(render_markdown(report).encode(), REPORT_MD)
        heads = {h: _rounded(acc) for h, acc in report["student"].items()}
        self.loop.log(
            "report",
            uri=None if root is None else f"{root.uri.rstrip('/')}/{REPORT_JSON}",
            student=heads,
            teacher=None if report["teacher"] is None else _rounded(report["teacher"]),
        )


def _rounded(acc: dict[str, Any]) -> dict[str, float]:
    """Overall and group accuracies, rounded for a log line."""
    return {k: round(float(v), 4) for k, v in acc.items() if k != "perClass"}


def run_vision(
    cfg: VisionConfig, ctx: WorkerContext, on_step: StepCallback | None = None
) -> ExitCode:
    """Run (or resume) a DeiT-LT job; the worker contract's entry point for `vision`."""
    check_world_size(cfg, ctx.world_size)
    return run_workload(ctx, lambda d, preempt: DeitLtRun(cfg, ctx, d, preempt), on_step)
