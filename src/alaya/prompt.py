"""The published prompt format (docs/design.md, "Contracts"), the one place it is written down.

A turn is ``### Instruction:\\t\\n{instruction}\\n\\n`` followed by ``### Output:\\t\\n{output} </s>``. A prompt
for generation is the history's turns, oldest first, then the new instruction block; the model writes
``### Output:\\t\\n`` itself, exactly as the published api.py and inference script expect.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

INSTRUCTION_FORMAT = "### Instruction:\t\n{instruction}\n\n"
OUTPUT_FORMAT = "### Output:\t\n{output} </s>"
OUTPUT_FLAG = "### Output:\t\n"
OUTPUT_MARKER = OUTPUT_FLAG.rstrip("\t\n")  # "### Output:": inside a reply, the model began another one
# The model begins a new turn by itself when it has finished its reply: that ends the reply.
TURN_STOP = INSTRUCTION_FORMAT.split("{")[0].rstrip("\t\n")  # "### Instruction:"

# The same format as a Jinja chat template for tokenizer_config.json (transformers' apply_chat_template).
# A system message, which the published recipe never used, is put first as plain text followed by a blank line.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '### Instruction:\\t\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Output:\\t\\n' + message['content'] + ' </s>' }}"
    "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def format_turn(instruction: str, output: str) -> str:
    return INSTRUCTION_FORMAT.format(instruction=instruction) + OUTPUT_FORMAT.format(output=output)


def check_history(history: Sequence[str]) -> None:
    """The published api.py's history: user, assistant, user, ... (an even number of items)."""
    if len(history) % 2:
        raise ValueError(f"history must alternate user and assistant turns (even length), got {len(history)} items")


def format_prompt(instruction: str, history: Sequence[str] = (), system: str | None = None) -> str:
    """The text the model continues: history as the published api.py takes it (user, assistant, user, ...)."""
    check_history(history)
    parts = [] if system is None else [system + "\n\n"]
    for i, msg in enumerate(history):
        parts.append(INSTRUCTION_FORMAT.format(instruction=msg) if i % 2 == 0 else OUTPUT_FORMAT.format(output=msg))
    parts.append(INSTRUCTION_FORMAT.format(instruction=instruction))
    return "".join(parts)


def render_messages(messages: Iterable[Mapping[str, str]]) -> str:
    """OpenAI-style messages in the published format; equal to applying CHAT_TEMPLATE."""
    parts = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            parts.append(content + "\n\n")
        elif role == "user":
            parts.append(INSTRUCTION_FORMAT.format(instruction=content))
        elif role == "assistant":
            parts.append(OUTPUT_FORMAT.format(output=content))
        else:
            raise ValueError(f"unknown role: {role}")
    return "".join(parts)
