"""Supervised fine-tuning: instruction data, the prompt format with loss masks, mixing, screening, training."""
