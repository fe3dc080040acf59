"""Alaya: the bilingual LLM recipe, from raw corpus to a served chat model."""

__version__ = "0.1.0"
