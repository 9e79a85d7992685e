"""LoRA fine-tuning: formatting, tokenisation, the trainer, adapters, checkpoints."""
