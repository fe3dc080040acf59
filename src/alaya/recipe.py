"""Numbers of the published Alaya-7B recipe that more than one room needs (docs/design.md, "The recipe"); a shared
module like prompt.py, so no room imports a later one to read a constant."""

ALAYA_VOCAB_SIZE = 60160  # the tokenizer's vocabulary, and so the model's embedding rows
