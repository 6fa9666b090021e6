"""``curriculum-finetune`` by job: its config, the example pools, the phase plan, training and evaluation."""
