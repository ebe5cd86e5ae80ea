"""The OpenAI surface beyond plain text, against a running `tellme serve` and the official
`openai` client: structured output (response_format, pydantic parse), tools and tool_choice, and
the request fields (n, penalties, logit_bias, echo, stop token ids, stream_options, tokenize)."""

from __future__ import annotations

import json
import math
import signal
from typing import Annotated

import pytest

import tellme
from tests.helpers import failures_in_threads
from tests.test_server import KEY, post, start
from tests.test_constrain import SCHEMA

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Verona?"}]


@pytest.fixture(scope="module")
def server():
    proc, url = start("--api-key", KEY, "--max-batch", "8", "--context", "1024")
    yield url
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0 and "Traceback" not in proc.stderr.read()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model():
    return tellme.load(context=1024)  # as the server runs it


def schema_format(schema, name="reply"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# ---- structured output ----

def test_json_schema_replies_validate_under_random_sampling(client):
    for seed in range(4):
        r = client.chat.completions.create(model="default", messages=ASK, temperature=1.5, seed=seed,
                                           response_format=schema_format(SCHEMA))
        c = r.choices[0]
        assert c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.message.content), SCHEMA)
    r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=220, temperature=1.5, seed=9,
                                  extra_body={"response_format": schema_format(SCHEMA)})
    jsonschema.validate(json.loads(r.choices[0].text), SCHEMA)


def test_json_object_and_streaming(client):
    r = client.chat.completions.create(model="default", messages=ASK, temperature=0.7, seed=1,
                                       response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # cut by max_tokens: a prefix of an object
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")
    chunks = list(client.chat.completions.create(model="default", messages=ASK, temperature=1.5,
                                                 seed=2, response_format=schema_format(SCHEMA), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), SCHEMA)


def test_pydantic_models_through_parse(client):
    class Home(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=10)
        floor: int | None = pydantic.Field(ge=0, le=9)

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=12)
        age: int = pydantic.Field(ge=0, le=120)
        home: Home
        tags: list[Annotated[str, pydantic.Field(max_length=6)]] = pydantic.Field(max_length=3)

    for seed in range(3):
        r = client.chat.completions.parse(model="default", messages=ASK, temperature=1.5, seed=seed,
                                          response_format=Person)
        person = r.choices[0].message.parsed
        assert isinstance(person, Person) and 0 <= person.age <= 120 and len(person.tags) <= 3


def test_a_reply_cut_by_max_tokens_is_length(client):
    r = client.chat.completions.create(model="default", messages=ASK, max_tokens=4, temperature=0,
                                       response_format=schema_format(SCHEMA))
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("fmt, words", [
    (schema_format({"not": {"type": "string"}}), "not"),
    (schema_format({"type": "strin"}), "strin"),
    (schema_format({"type": "string", "pattern": "(?<=a)b"}), "look-around"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "name"),
    ({"type": "xml"}, "response_format"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "response_format"),
])
def test_unusable_schemas_are_400_naming_the_part(server, fmt, words):
    r = post(server, "/v1/chat/completions", {"model": "default", "messages": ASK, "response_format": fmt})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format"), r.text
    assert words in r.text


def test_mixed_batch_of_eight(client, model):
    """8 concurrent requests, half constrained (random sampling), half free (greedy): every
    constrained reply validates, every free one is the model's reply run alone."""
    prompts = ["ROMEO:", "JULIET:\nO Romeo", "Nurse:", "To be"]
    want = {p: model.generate(p, 24, temperature=0) for p in prompts}
    def one(i):
        p = prompts[i // 2]
        if i % 2:
            r = client.completions.create(model="default", prompt=p, max_tokens=24, temperature=0)
            assert r.choices[0].text == want[p], (p, r.choices[0].text)
        else:
            r = client.completions.create(model="default", prompt=p, max_tokens=220, temperature=1.5, seed=i,
                                          extra_body={"response_format": schema_format(SCHEMA)})
            jsonschema.validate(json.loads(r.choices[0].text), SCHEMA)

    errors = failures_in_threads(one, 8)
    assert not errors, errors


# ---- tools ----

def test_required_and_named_tool_calls(client):
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(model="default", messages=ASK, tools=[WEATHER, TIME], tool_choice=choice,
                                           parallel_tool_calls=False, temperature=1.0, seed=4)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1, c
        call = c.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        spec = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]
        jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])
        if choice != "required":
            assert call.function.name == "get_weather"


def test_tool_round_trip(client):
    """The assistant's call, the tool's answer, then a final answer in text."""
    r = client.chat.completions.create(model="default", messages=ASK, tools=[WEATHER], tool_choice="required",
                                       parallel_tool_calls=False, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    history = ASK + [r.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 14, "sky": "rain"})}]
    final = client.chat.completions.create(model="default", messages=history, tools=[WEATHER], tool_choice="none",
                                           max_tokens=24, temperature=0)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("parallel", [False, True])
def test_streamed_tool_calls_are_the_same_calls(client, parallel):
    """One call (ends on its own: tool_calls), or parallel calls cut by max_tokens (length, with
    the calls written whole before the cut): streamed or not, the same calls."""
    kw = dict(model="default", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=1.0,
              seed=11, parallel_tool_calls=parallel, **({"max_tokens": 150} if parallel else {}))
    whole = client.chat.completions.create(**kw).choices[0]
    calls, reason = {}, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        reason = chunk.choices[0].finish_reason or reason
        for d in chunk.choices[0].delta.tool_calls or ():
            c = calls.setdefault(d.index, {"name": "", "arguments": ""})
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
    assert reason == whole.finish_reason == ("length" if parallel else "tool_calls")
    assert len(calls) >= (2 if parallel else 1)
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == \
        [(t.function.name, json.loads(t.function.arguments)) for t in whole.message.tool_calls]


def test_auto_offers_tools_and_reads_calls_only_when_written(client, model):
    """The shipped template knows no tools: they go in the documented system message. The model
    writes verse, not calls, so the reply is plain content: the model's own reply to that prompt."""
    from tellme.server.protocol import ChatMessage, Tool
    from tellme.server.tools import FALLBACK, render

    messages, specs = render([ChatMessage(**m) for m in ASK], [Tool(**WEATHER)], False)
    assert specs is None and messages[0]["role"] == "system" and messages[0]["content"].startswith(FALLBACK)
    assert json.loads(messages[0]["content"][len(FALLBACK):]) == WEATHER["function"]
    r = client.chat.completions.create(model="default", messages=ASK, tools=[WEATHER], max_tokens=24, temperature=0)
    c = r.choices[0]
    assert c.message.tool_calls is None and c.finish_reason in ("stop", "length")
    want = "".join(model.stream_ids(model.encode_chat(messages), 24, list(model.config.stop_strings), temperature=0))
    assert c.message.content == want


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
])
def test_tool_errors(server, body, param):
    r = post(server, "/v1/chat/completions", {"model": "default", "messages": ASK, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


# ---- fields ----

def test_n_choices(client, model):
    want = model.generate("ROMEO:", 16, temperature=0)
    r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=16, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.text == want for c in r.choices)
    assert r.usage.completion_tokens == 48
    seeded = client.chat.completions.create(model="default", messages=ASK, max_tokens=16, temperature=1.2, seed=7,
                                            n=3)
    texts = [c.message.content for c in seeded.choices]
    assert len(set(texts)) > 1  # the choices are sampled with seeds 7, 8, 9
    again = client.chat.completions.create(model="default", messages=ASK, max_tokens=16, temperature=1.2, seed=7, n=3)
    assert [c.message.content for c in again.choices] == texts
    streamed = {}
    for chunk in client.chat.completions.create(model="default", messages=ASK, max_tokens=16, temperature=1.2,
                                                seed=7, n=3, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert [streamed[i] for i in range(3)] == texts


def test_penalties_and_logit_bias_as_the_model_applies_them(client, model):
    for kw in (dict(presence_penalty=1.5), dict(frequency_penalty=2.0), dict(logit_bias={"11": 100})):
        r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0, **kw)
        sampling = {**kw, "logit_bias": {int(k): v for k, v in kw["logit_bias"].items()}} if "logit_bias" in kw else kw
        assert r.choices[0].text == model.generate("ROMEO:", 24, temperature=0, **sampling)
        assert r.choices[0].text != model.generate("ROMEO:", 24, temperature=0)
    banned = model.encode(model.generate("ROMEO:", 1, temperature=0), add_special_tokens=False)[0]
    r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=1, temperature=0, logprobs=0,
                                  logit_bias={str(banned): -100})
    assert model.encode(r.choices[0].text, add_special_tokens=False)[0] != banned


def test_echo_and_prompt_logprobs(client, model):
    r = client.completions.create(model="default", prompt="ROMEO:\nGood", max_tokens=8, temperature=0, echo=True)
    assert r.choices[0].text == model.decode(model.encode("ROMEO:\nGood")) + model.generate("ROMEO:\nGood", 8,
                                                                                            temperature=0)
    r = client.completions.create(model="default", prompt="ROMEO:\nGood", max_tokens=8, temperature=0, echo=True,
                                  logprobs=2)
    lp, prompt = r.choices[0].logprobs, model.encode("ROMEO:\nGood")
    assert len(lp.token_logprobs) == len(prompt) + 8 and lp.token_logprobs[0] is None
    logits = model.logits(prompt).astype(float)
    for k in range(1, len(prompt)):
        row = logits[k - 1]
        want = row[prompt[k]] - (row.max() + math.log(math.fsum(math.exp(x - row.max()) for x in row)))
        assert lp.token_logprobs[k] == pytest.approx(want, abs=1e-6)
        assert len(lp.top_logprobs[k]) <= 2
    ids = client.completions.create(model="default", prompt=prompt, max_tokens=8, temperature=0)
    assert ids.choices[0].text == model.generate("ROMEO:\nGood", 8, temperature=0)


def test_stop_token_ids_and_strings(client, model):
    ids = list(model.stream_tokens(model.encode("ROMEO:"), 24, model.eos_ids(), temperature=0))
    cut = ids[5]
    first = ids.index(cut)
    want = model.decode(ids[:first])
    for body in ({"stop": [cut]}, {"stop_token_ids": [cut]}):
        r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0, extra_body=body)
        assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == first


def test_stream_options_include_usage_and_user(client):
    chunks = list(client.chat.completions.create(model="default", messages=ASK, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}, user="alice"))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model="default", messages=ASK, max_tokens=8, temperature=0,
                                                stream=True))
    assert all(c.usage is None for c in plain)


def test_tokenize_detokenize_and_one_model(server, model):
    r = post(server, "/tokenize", {"content": "Good morrow, cousin"}).json()
    assert r["tokens"] == model.encode("Good morrow, cousin", add_special_tokens=False)
    pieces = post(server, "/tokenize", {"content": "Good morrow", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Good morrow"
    assert post(server, "/detokenize", {"tokens": r["tokens"]}).json() == {"content": "Good morrow, cousin"}
    bad = post(server, "/detokenize", {"tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(server + "/v1/models/default", headers=headers).json()["id"] == "default"
    assert httpx.get(server + "/v1/models/other", headers=headers).status_code == 404


@pytest.mark.parametrize("body, param", [
    ({"best_of": 3}, "best_of"),
    ({"suffix": "end"}, "suffix"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"logit_bias": {"5": 300}}, "logit_bias"),
    ({"logit_bias": {"999999": 1}}, "logit_bias"),
    ({"logit_bias": {"x": 1}}, "logit_bias.x.[key]"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"stop": [10**7]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"prompt": [1, 2, 10**7]}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
])
def test_field_errors_name_the_field(server, body, param):
    r = post(server, "/v1/completions", {"model": "default", "prompt": "x", **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_a_template_that_knows_tools_gets_them_as_transformers_passes_them():
    from tellme.server.protocol import ChatMessage, Tool
    from tellme.server.tools import knows_tools, render
    from tellme.tokenizer import Tokenizer

    template = ("{% if tools %}[TOOLS]{{ tools | tojson }}[/TOOLS]\n{% endif %}{% for m in messages %}<{{ m.role }}>"
                "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
                "{{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}"
                "{% if m.tool_call_id %} (for {{ m.tool_call_id }}){% endif %}\n{% endfor %}")
    tok = Tokenizer(tellme.load().tokenizer.json, {"chat_template": template})
    assert knows_tools(tok.chat_template) and not knows_tools(tellme.load().tokenizer.chat_template)
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Verona", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "14 C, rain"}]
    messages, specs = render([ChatMessage(**m) for m in history], [Tool(**WEATHER)], True)
    text = tok.apply_chat_template(messages, tools=specs)
    assert json.loads(text[len("[TOOLS]"):text.index("[/TOOLS]")]) == [WEATHER]
    assert 'CALL get_weather {"city": "Verona", "unit": "celsius"}' in text
    assert "<tool>14 C, rain (for call_1)" in text
    plain, none = render([ChatMessage(**m) for m in history], [Tool(**WEATHER)], False)  # the fallback instead
    assert none is None and plain[2]["content"].startswith("<tool_call>") and plain[3] == {
        "role": "user", "content": "<tool_response>14 C, rain</tool_response>"}
