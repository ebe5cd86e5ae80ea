"""Tool calling for chat: how the tool list reaches the model, the format a call takes in the
output, the grammar that enforces it, and reading calls back out of the text.

A chat template that mentions `tools` gets them as transformers passes them (`tools=` in the
template's context, assistant `tool_calls` and `tool` messages as they are). One that does not, as
the shipped model's, gets them in a system message (FALLBACK below), with earlier calls and their
results written into the conversation as text. Either way a call is written as

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

(the Hermes/Qwen format), one block per call. `tool_choice: "required"` or a named function
constrains the reply to such blocks (constrain.py); "auto" leaves the model free and reads any
blocks it wrote; "none" offers no tools.
"""

from __future__ import annotations

import json
import re
import uuid

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FALLBACK = ("You may call these tools. To call one, reply with only\n"
            f'{OPEN}{{"name": <the tool\'s name>, "arguments": <its arguments as a JSON object>}}{CLOSE}\n'
            "Tools (JSON):\n")
BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


def knows_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in chat_template


def functions(tools) -> list[dict]:
    return [t.function.model_dump(exclude_none=True) for t in tools]


def call_text(name: str, arguments: str) -> str:
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError:
        args = arguments
    return OPEN + json.dumps({"name": name, "arguments": args}) + CLOSE


def render(messages, tools, template_knows: bool) -> tuple[list[dict], list[dict] | None]:
    """The messages and `tools=` for the chat template."""
    out = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        d = {"role": role, "content": m.text()}
        if template_knows:
            if m.tool_calls:
                d["tool_calls"] = [{"id": c.id, "type": "function",
                                    "function": {"name": c.function.name, "arguments": _loads(c.function.arguments)}}
                                   for c in m.tool_calls]
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
            if m.name:
                d["name"] = m.name
        elif m.tool_calls:
            d["content"] = "\n".join([d["content"]] * bool(d["content"]) +
                                     [call_text(c.function.name, c.function.arguments) for c in m.tool_calls])
        elif role == "tool":
            d = {"role": "user", "content": f"<tool_response>{d['content']}</tool_response>"}
        out.append(d)
    if not tools:
        return out, None
    specs = [{"type": "function", "function": f} for f in functions(tools)]
    if template_knows:
        return out, specs
    text = FALLBACK + "\n".join(json.dumps(f) for f in functions(tools))
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + text}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out, None


def _loads(arguments: str):
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def grammar(tools, choice, parallel: bool) -> str | None:
    """The Lark grammar (llguidance's, with %json) of a reply made only of tool calls, for
    tool_choice "required" or a named function; None for "auto" and "none"."""
    if choice in (None, "auto", "none"):
        return None
    chosen = [t for t in tools if choice == "required" or t.function.name == choice.function.name]
    schemas = [{"type": "object", "properties": {"name": {"const": t.function.name},
                                                 "arguments": t.function.parameters or {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False} for t in chosen]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    schema["x-guidance"] = {"whitespace_flexible": False}
    start = 'start: call ("\\n" call)*' if parallel and choice == "required" else "start: call"
    return f"{start}\ncall: {json.dumps(OPEN)} %json {json.dumps(schema)} {json.dumps(CLOSE)}\n"


def parse(text: str, tools) -> tuple[str | None, list[dict]]:
    """(content, tool calls) read from a reply: the whole blocks naming a known tool with JSON
    arguments become calls, the rest is content; a block that does not parse leaves the whole
    text as content."""
    names = {t.function.name for t in tools or ()}
    calls = []
    for body in BLOCK.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            return text, []
        if not isinstance(call, dict) or call.get("name") not in names or not isinstance(call.get("arguments"), dict):
            return text, []
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}})
    if not calls:
        return text, []
    rest = BLOCK.sub("", text).strip()
    return rest or None, calls


class ToolStream:
    """Streaming: text pieces in, ("content", text) and ("tool_call", call) events out. Text that
    may still become a call (blank, the start of OPEN, or an unclosed block) is held until it is
    decided; once the reply is plain text, pieces pass straight through."""

    def __init__(self, tools):
        self.tools, self.held, self.plain = tools, "", False

    def push(self, piece: str) -> list[tuple[str, object]]:
        if self.plain:
            return [("content", piece)] if piece else []
        self.held += piece
        events = []
        while True:
            head = self.held.lstrip()
            if not head or (OPEN.startswith(head) and head != OPEN):
                return events
            end = head.find(CLOSE) if head.startswith(OPEN) else -1
            calls = parse(head[:end + len(CLOSE)], self.tools)[1] if end >= 0 else []
            if head.startswith(OPEN) and end < 0:
                return events
            if not calls:  # plain text from here on
                self.plain, text, self.held = True, self.held, ""
                return events + [("content", text)]
            events += [("tool_call", c) for c in calls]
            self.held = head[end + len(CLOSE):]

    def finish(self) -> list[tuple[str, object]]:
        text, self.held = self.held, ""
        return [("content", text)] if text.strip() else []
