"""Tokenizer (`tokenizers` library) and chat template (Jinja, as transformers renders it)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .errors import FormatError, UsageError


class Tokenizer:
    def __init__(self, tokenizer_json: str, tokenizer_config: dict | None = None, source: str = ""):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tok = HFTokenizer.from_str(tokenizer_json)
        except Exception as e:  # the library raises bare Exceptions for malformed JSON
            raise FormatError(f"{source or 'tokenizer'}: cannot read tokenizer ({e})") from e
        self.json = tokenizer_json
        if not isinstance(tokenizer_config or {}, dict):
            raise FormatError(f"{source or 'tokenizer'}: tokenizer_config.json must hold a JSON object")
        self.config = tokenizer_config or {}
        self.chat_template = self.config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: take the default one
            named = {t.get("name"): t.get("template") for t in self.chat_template if isinstance(t, dict)}
            self.chat_template = named.get("default") or next(iter(named.values()), None)
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise FormatError(f"{source or 'tokenizer'}: chat_template must be a string")

    @classmethod
    def from_dir(cls, path: Path) -> "Tokenizer | None":
        file = path / "tokenizer.json"
        if not file.exists():
            return None
        config_file = path / "tokenizer_config.json"
        try:
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
            text = file.read_text(encoding="utf-8")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise FormatError(f"{config_file}: invalid JSON ({type(e).__name__}: {e})") from None
        return cls(text, config, str(file))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, token) -> int | None:
        if isinstance(token, dict):  # AddedToken serialisation
            token = token.get("content")
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None) -> str:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not self.chat_template:
            raise UsageError("this model's tokenizer_config.json has no chat_template; use generate() instead")
        if not isinstance(messages, (list, tuple)) or not messages:
            raise UsageError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r}")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise UsageError(f"message {i} must be a dict with a 'role' and a 'content' string, got {m!r}")

        def raise_exception(message):
            raise TemplateError(message)

        # the globals transformers gives templates
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        special = {k: (v.get("content") if isinstance(v, dict) else v)
                   for k, v in self.config.items() if k.endswith("_token")}
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, **special)
        except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as e:
            raise UsageError(f"the model's chat template failed: {e}") from None


class StreamDecoder:
    """Text pieces from token ids arriving one at a time (the `tokenizers` library's DecodeStream,
    which holds back a character split across tokens and decodes only a short window)."""

    def __init__(self, tokenizer: Tokenizer):
        from tokenizers.decoders import DecodeStream

        self._tok = tokenizer._tok
        self._stream = DecodeStream(skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        return self._stream.step(self._tok, token_id) or ""


class TextStream:
    """Generated text, token by token: detokenized (StreamDecoder), with `stop` strings cut out.
    push() returns (text that is safe to show, whether a stop string ended it); text that could
    still be the start of a stop string is held back until it is not."""

    def __init__(self, tokenizer: Tokenizer, stop=()):
        self.stops = [stop] if isinstance(stop, str) else list(stop)
        if not all(isinstance(s, str) and s for s in self.stops):
            raise UsageError(f"stop must be non-empty strings, got {stop!r}")
        self.decoder = StreamDecoder(tokenizer)
        self.held = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        self.held += self.decoder.push(token_id)
        if not self.stops:
            out, self.held = self.held, ""
            return out, False
        hit = min((self.held.find(s) for s in self.stops if s in self.held), default=-1)
        if hit >= 0:
            out, self.held = self.held[:hit], ""
            return out, True
        safe = len(self.held) - max(len(s) - 1 for s in self.stops)
        if safe <= 0:
            return "", False
        out, self.held = self.held[:safe], self.held[safe:]
        return out, False
