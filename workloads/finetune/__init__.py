"""The `finetune` workload: supervised fine-tuning of a base checkpoint, plain or with SSR."""
