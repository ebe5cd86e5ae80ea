"""The request bodies tellme's server takes (pydantic: a wrong type or range is a 400 naming the
field) and OpenAI's error shape. docs/serving.md lists every field."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaFormat], Field(discriminator="type")]


class StreamOptions(_Strict):
    include_usage: bool = False


# Fields of OpenAI's API that would change the output and that tellme does not implement: refused
# by name rather than ignored (other unknown fields are ignored, as OpenAI-compatible servers do).
UNSUPPORTED = {"best_of": lambda v: v not in (None, 1), "suffix": lambda v: v not in (None, ""),
               "functions": lambda v: v is not None, "function_call": lambda v: v is not None,
               "audio": lambda v: v is not None, "prediction": lambda v: v is not None,
               "modalities": lambda v: v not in (None, ["text"])}


class Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)       # not OpenAI's; llama.cpp's and vLLM's servers take it too
    min_p: float = Field(0.0, ge=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # vLLM's and llama.cpp's (repeat_penalty)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str | int] | None = Field(None, max_length=16)
    stop_token_ids: list[int] | None = Field(None, max_length=64)   # vLLM's
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None           # accepted; tellme keeps no per-user state

    def check(self) -> None:
        """What the field types cannot say: raises ApiError naming the field."""
        for field, unsupported in UNSUPPORTED.items():
            if unsupported((self.model_extra or {}).get(field)):
                raise ApiError(400, f"{field} is not supported by tellme", field)
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options")
        for k, v in (self.logit_bias or {}).items():
            if not -100 <= v <= 100:
                raise ApiError(400, f"logit_bias: the bias of token {k} must be in [-100, 100], got {v}", "logit_bias")


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def check(self, i: int) -> None:
        where = f"messages.{i}"
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ApiError(400, f"{where}: a {self.role} message needs content", f"{where}.content")
        if self.tool_calls and self.role != "assistant":
            raise ApiError(400, f"{where}: only assistant messages carry tool_calls", f"{where}.tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ApiError(400, f"{where}: a tool message needs the tool_call_id it answers", f"{where}.tool_call_id")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class FunctionSpec(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    def check(self) -> None:
        super().check()
        for i, m in enumerate(self.messages):
            m.check(i)
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ApiError(400, "tools: two functions have the same name", "tools")
        if self.tool_choice not in (None, "none", "auto") and not names:
            raise ApiError(400, "tool_choice needs tools", "tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ApiError(400, f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools",
                           "tool_choice")


class TokenizeRequest(BaseModel):
    model: str | None = None          # default: the server's first model
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    model: str | None = None
    tokens: list[int]
