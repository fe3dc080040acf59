"""The HTTP API's request and response schemas and its error type (OpenAI's shapes, plus the published /qa)."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

ERROR = {"content": {"application/json": {"schema": {"type": "object"}}}}
ERROR_RESPONSES = {400: {"description": "invalid request", **ERROR}, 401: {"description": "missing or wrong API key", **ERROR},
                   429: {"description": "queue full, retry later", **ERROR}}


def error_body(message: str, type_: str, param: str | None = None) -> dict:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


# ----------------------------------------------------------------------------- request schemas
Stop = Union[str, Annotated[list[str], Field(max_length=8)], None]


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, logit_bias=None, ...)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=0, description="0: score the prompt only (/v1/completions with echo)")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="extension: 0 switches it off")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="extension, as in transformers")
    ignore_eos: bool = Field(False, description="extension, as in vLLM: generate max_tokens tokens (benchmarks)")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    seed: int | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: dict | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[TextPart]]


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(SamplingFields):
    # a text, texts, token ids, or lists of token ids (as lm-eval's local-completions sends them)
    prompt: Union[str, Annotated[list[str], Field(min_length=1)], Annotated[list[int], Field(min_length=1)],
                  Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="the top-N log-probabilities at each token")


class QARequest(BaseModel):
    instruction: str
    history: list[str] = Field(default_factory=list)
    temperature: float = Field(1.0, ge=0, le=2)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(0.9, gt=0, le=1)


class QAResponse(BaseModel):
    output: str
    org_output: str
