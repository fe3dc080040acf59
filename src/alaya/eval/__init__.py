"""Evaluation: perplexity and bits per byte, multiple-choice and generation benchmarks, chat-model behaviour;
results in lm-evaluation-harness's layout (``alaya eval``)."""
