"""Every Prometheus metric a worker exports, by name: the one list dashboards are checked against.

Labels on all of them: `job`, `namespace`, `rank` (bounded: never a step or a pod UID).
A histogram also exports `<name>_bucket`, `<name>_sum` and `<name>_count`. The one exception is
`carina_checkpoint_damaged`, which names each damaged checkpoint a resume passed over
(`DAMAGED_LABELS`): a handful at most per attempt, never one per step. On
`carina_worker_rank_step_seconds`, which global rank 0 alone exports, `rank` names the rank
measured (one series per rank of the job), not the exporting one.
"""

from __future__ import annotations

LABELS = ("job", "namespace", "rank")

WORKER_STEP = "carina_worker_step"  # gauge: optimizer steps completed
WORKER_TOTAL_STEPS = "carina_worker_total_steps"  # gauge: steps the run will take
WORKER_LOSS = "carina_worker_loss"  # gauge: training loss of the last step
WORKER_EVAL_LOSS = "carina_worker_eval_loss"  # gauge: last held-out loss
WORKER_LEARNING_RATE = "carina_worker_learning_rate"  # gauge: base LR of the last step
WORKER_TOKENS_TOTAL = "carina_worker_tokens_total"  # counter: tokens trained on, all ranks
WORKER_TOKENS_PER_SECOND = "carina_worker_tokens_per_second"  # gauge: all ranks, recent
WORKER_MFU = "carina_worker_mfu"  # gauge: model FLOPs utilization, 0-1; NaN: unknown
# gauge: median seconds between this rank's recent step starts (the last 20 steps)
WORKER_STEP_SECONDS = "carina_worker_step_seconds"
# gauge, on global rank 0, one series per rank: that rank's median compute seconds per step
# (step start to its gradients ready, before waiting on the others), gathered every 10 steps
WORKER_RANK_STEP_SECONDS = "carina_worker_rank_step_seconds"
# gauge, one series: the stage being trained, 1-based; label `stage` its name (a staged run
# has at most 16 stages; the series of a finished stage is removed)
WORKER_STAGE = "carina_worker_stage"
STAGE_LABELS = (*LABELS, "stage")
WORKER_STAGES = "carina_worker_stages"  # gauge: stages of the whole run
CHECKPOINT_SAVE_SECONDS = "carina_checkpoint_save_seconds"  # histogram: collective save time
CHECKPOINT_LAST_STEP = "carina_checkpoint_last_step"  # gauge: step of the newest checkpoint
CHECKPOINT_CORRUPT_TOTAL = "carina_checkpoint_corrupt_total"  # counter: damaged ones skipped
# gauge, 1 per damaged checkpoint this attempt's resume passed over (for the whole attempt);
# the platform's only source for the CheckpointCorrupt Warning and status.damagedCheckpoints
CHECKPOINT_DAMAGED = "carina_checkpoint_damaged"
DAMAGED_LABELS = (*LABELS, "step", "uri", "file", "reason")
FINETUNE_SSR_ACCEPTANCE_RATIO = (
    "carina_finetune_ssr_acceptance_ratio"  # gauge: own answers kept, 0-1
)

# Quantize workload; extra bounded labels: `layer` (a linear layer's module name, fixed by the
# model) and `tensor` ("input" or "output"); `precision` ("w16a16", "w4a16", "w4a4", ...).
QUANTIZE_LAYER_LABELS = (*LABELS, "layer", "tensor")
QUANTIZE_PRECISION_LABELS = (*LABELS, "precision")
QUANTIZE_ACTIVATION_KURTOSIS = "carina_quantize_activation_kurtosis"  # gauge: per layer
QUANTIZE_CHANNEL_MAX_MEDIAN_RATIO = "carina_quantize_channel_max_median_ratio"  # gauge: per layer
QUANTIZE_PERPLEXITY = "carina_quantize_perplexity"  # gauge: held-out perplexity by precision

ALL = (
    WORKER_STEP,
    WORKER_TOTAL_STEPS,
    WORKER_LOSS,
    WORKER_EVAL_LOSS,
    WORKER_LEARNING_RATE,
    WORKER_TOKENS_TOTAL,
    WORKER_TOKENS_PER_SECOND,
    WORKER_MFU,
    WORKER_STEP_SECONDS,
    WORKER_RANK_STEP_SECONDS,
    WORKER_STAGE,
    WORKER_STAGES,
    CHECKPOINT_SAVE_SECONDS,
    CHECKPOINT_LAST_STEP,
    CHECKPOINT_CORRUPT_TOTAL,
    CHECKPOINT_DAMAGED,
    FINETUNE_SSR_ACCEPTANCE_RATIO,
    QUANTIZE_ACTIVATION_KURTOSIS,
    QUANTIZE_CHANNEL_MAX_MEDIAN_RATIO,
    QUANTIZE_PERPLEXITY,
)
