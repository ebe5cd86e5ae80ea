"""Tokenizers in GGUF metadata (`tokenizer.ggml.*`) <-> `tokenizers` tokenizers.

GGUF describes a tokenizer by its vocabulary (tokens, token types, scores), BPE merges and a
pre-tokenizer name. Two models cover the ternary models in circulation:

- `gpt2`: byte-level BPE (BitNet b1.58 2B-4T, Llama 3, Falcon3). The merges are in the file; the
  pre-tokenizer name selects the regex that splits text before BPE.
- `llama`: SentencePiece-style BPE with byte fallback (Llama 2, bitnet_b1_58-large/3B). "▁"
  stands for a space; merges are in the file or, as llama.cpp does, implied by the scores (a
  pair merges when the joined token exists, higher score first).

Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain added
tokens, as llama.cpp matches both whole in text.
"""

from __future__ import annotations

import json

from gguf import TokenType

from ..errors import FormatError, UsageError
from ..tokenizer import Tokenizer

# Llama 3's pre-tokenizer regex (also Falcon3's, DBRX's, ...)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {"llama-bpe": LLAMA3_SPLIT, "llama3": LLAMA3_SPLIT, "llama-v3": LLAMA3_SPLIT, "falcon3": LLAMA3_SPLIT,
          "dbrx": LLAMA3_SPLIT, "smaug-bpe": LLAMA3_SPLIT}
# GPT-2's own regex, which tokenizers' ByteLevel applies: llama.cpp's name first ("gpt2", which it
# refuses, was written by tellme before 2026-12)
GPT2_NAMES = ("gpt-2", "default", "gpt2")
SPACE = "\u2581"


# ---- GGUF -> tokenizers ----

def tokenizer_from_gguf(meta: dict, source: str = "") -> Tokenizer | None:
    """The tokenizer a GGUF file's metadata describes, or None if it has none."""
    kind = meta.get("tokenizer.ggml.model")
    if kind in (None, "none"):
        return None
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise FormatError(f"{source}: tokenizer.ggml.tokens is missing or not a list of strings")
    n = len(tokens)
    types = meta.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * n
    scores = meta.get("tokenizer.ggml.scores")
    for key, arr in (("token_type", types), ("scores", scores)):
        if arr is not None and (not isinstance(arr, list) or len(arr) != n):
            raise FormatError(f"{source}: tokenizer.ggml.{key} has {len(arr) if isinstance(arr, list) else arr!r} "
                              f"entries for {n} tokens")
    vocab: dict[str, int] = {}
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty != TokenType.UNUSED:  # ids the tokenizer never produces (llama.cpp's [PAD{i}] fillers)
            vocab.setdefault(t, i)

    def token_id(key: str) -> int | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        if i is None:
            return None
        if not isinstance(i, int) or not 0 <= i < n:
            raise FormatError(f"{source}: tokenizer.ggml.{key} = {i!r} is not a token id below {n}")
        return i

    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None:
        merges = [tuple(m.split(" ", 1)) for m in merges]
        if any(len(m) != 2 for m in merges):
            raise FormatError(f"{source}: tokenizer.ggml.merges holds an entry without a space")
    try:
        tok = _build(kind, meta, tokens, vocab, merges, scores, types, token_id, source)
    except FormatError:
        raise
    except Exception as e:  # tokenizers raises bare Exceptions for inconsistent vocabularies
        raise FormatError(f"{source}: cannot build the tokenizer: {e}") from None
    add_bos_default = kind == "llama"
    bos, eos = token_id("bos_token_id"), token_id("eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        from tokenizers import processors
        pre = [tokens[bos]] if add_bos else []
        post = [tokens[eos]] if add_eos else []
        specials = {tokens[i]: i for i in ([bos] if add_bos else []) + ([eos] if add_eos else [])}
        tok.post_processor = processors.TemplateProcessing(
            single=pre + ["$A"] + post, pair=pre + ["$A"] + post + pre + ["$B:1"] + post,
            special_tokens=list(specials.items()))
    config = {"bos_token": tokens[bos] if bos is not None else None,
              "eos_token": tokens[eos] if eos is not None else None,
              "add_bos_token": add_bos}
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return Tokenizer(tok.to_str(), config, source)


def _build(kind, meta, tokens, vocab, merges, scores, types, token_id, source):
    from tokenizers import AddedToken

    if kind == "gpt2":
        if merges is None:
            raise FormatError(f"{source}: a gpt2 (BPE) tokenizer needs tokenizer.ggml.merges")
        tok = _byte_level(vocab, merges, meta.get("tokenizer.ggml.pre"), source)
    elif kind == "llama":
        if merges is None:
            if scores is None:
                raise FormatError(f"{source}: a llama (SentencePiece) tokenizer needs tokenizer.ggml.scores")
            merges = merges_from_scores(tokens, scores, types)
        unk = token_id("unknown_token_id")
        unk = tokens[unk] if unk is not None else next((tokens[i] for i, ty in enumerate(types)
                                                        if ty == TokenType.UNKNOWN), None)
        tok = _sentencepiece(vocab, merges, unk, bool(meta.get("tokenizer.ggml.add_space_prefix", True)))
    else:
        raise FormatError(f"{source}: tokenizer model {kind!r} is not supported (gpt2 and llama are)")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == TokenType.CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == TokenType.USER_DEFINED])
    return tok


def _byte_level(vocab, merges, pre, source):
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    if pre in SPLITS:
        split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLITS[pre]), behavior="isolated"),
                                         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif pre in GPT2_NAMES or pre is None:
        split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise FormatError(f"{source}: pre-tokenizer {pre!r} is not supported "
                          f"(supported: {', '.join(sorted(set(SPLITS) | set(GPT2_NAMES)))})")
    tok = HFTokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = split
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece(vocab, merges, unk, add_space_prefix: bool):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    tok = HFTokenizer(models.BPE(vocab, merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, split=False,
                                                 prepend_scheme="first" if add_space_prefix else "never")
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def merges_from_scores(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges implied by the scores: every split of a token into two tokens,
    the joined token's score deciding the order (higher first), ties by token id."""
    normal = {t: i for i, t in enumerate(tokens) if types[i] in (TokenType.NORMAL, TokenType.USER_DEFINED)}
    found = []
    for t, i in normal.items():
        for cut in range(1, len(t)):
            if t[:cut] in normal and t[cut:] in normal:
                found.append((-scores[i], i, cut, t[:cut], t[cut:]))
    found.sort()
    return [(a, b) for *_, a, b in found]
# ---- tokenizers -> GGUF ----

def _parts(node: dict | None) -> list[dict]:
    """A tokenizer.json component and, for a Sequence, its members."""
    if not node:
        return []
    return [node] + [p for key in ("pretokenizers", "normalizers", "decoders") for p in node.get(key) or []]


def _describe(spec: dict) -> tuple[str, str | None, bool]:
    """(tokenizer.ggml.model, tokenizer.ggml.pre, add_space_prefix) of a tokenizer.json."""
    model = spec.get("model") or {}
    pre = _parts(spec.get("pre_tokenizer"))
    kinds = [p.get("type") for p in pre]
    if model.get("type") != "BPE":
        raise UsageError(f"a {model.get('type')} tokenizer cannot be written to GGUF (BPE can)")
    if "ByteLevel" in kinds:
        if kinds == ["ByteLevel"] and pre[0].get("use_regex", True):
            return "gpt2", GPT2_NAMES[0], False
        splits = [p for p in pre if p.get("type") == "Split"]
        if kinds == ["Sequence", "Split", "ByteLevel"] and splits[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT:
            return "gpt2", "llama-bpe", False
        raise UsageError("this byte-level pre-tokenizer has no GGUF name (GPT-2's and Llama 3's regex have)")
    metaspace = [p for p in pre if p.get("type") == "Metaspace"]
    norms = _parts(spec.get("normalizer"))
    replaces = any(p.get("type") == "Replace" and p.get("content") == SPACE for p in norms)
    if model.get("byte_fallback") and (metaspace or replaces):
        prefix = (metaspace[0].get("prepend_scheme", "always") != "never" if metaspace
                  else any(p.get("type") == "Prepend" for p in norms))
        return "llama", None, prefix
    raise UsageError("only byte-level BPE and SentencePiece-style BPE tokenizers can be written to GGUF")


def write_tokenizer(writer, tokenizer: Tokenizer, vocab_size: int, bos_id: int | None, eos_ids) -> None:
    """tokenizer.ggml.* for `tokenizer`, its token list padded to the model's vocabulary."""
    spec = json.loads(tokenizer.json)
    kind, pre, space_prefix = _describe(spec)
    model = spec["model"]
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens") or []}
    by_id.update({i: a["content"] for i, a in added.items()})
    n = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(n):
        t = by_id.get(i)
        if t is None:  # llama.cpp's convention for ids the tokenizer does not use
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(t)
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        elif kind == "llama" and t == model.get("unk_token"):
            tokens.append(t)
            types.append(TokenType.UNKNOWN)
        elif kind == "llama" and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            tokens.append(t)
            types.append(TokenType.BYTE)
        else:
            tokens.append(t)
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model(kind)
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    if kind == "llama":  # llama.cpp merges by score: earlier merges score higher
        score = {}
        for rank, m in enumerate(merges):
            score.setdefault(m.replace(" ", ""), -float(rank + 1))
        writer.add_token_scores([score.get(t, 0.0) if ty == TokenType.NORMAL else -1e9 for t, ty in zip(tokens, types)])
        writer.add_add_space_prefix(space_prefix)
        unk = model.get("unk_token")
        if unk in model["vocab"]:
            writer.add_unk_token_id(model["vocab"][unk])
    writer.add_token_merges(merges)

    # BOS/EOS: what the post-processor adds, else the configuration's
    template = [p for p in _parts(spec.get("post_processor")) if p.get("type") == "TemplateProcessing"]
    single = template[0].get("single", []) if template else []
    first = single[0].get("SpecialToken", {}).get("id") if single else None
    last = single[-1].get("SpecialToken", {}).get("id") if single else None
    ids = {t: i for i, t in enumerate(tokens)}
    bos = ids.get(first) if first else bos_id
    if bos is None and isinstance(tokenizer.config.get("bos_token"), str):
        bos = ids.get(tokenizer.config["bos_token"])
    eos = next(iter(eos_ids), None)
    if eos is None:
        eos_token = tokenizer.config.get("eos_token")
        eos = ids.get(eos_token.get("content") if isinstance(eos_token, dict) else eos_token)
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos is not None:
        writer.add_eos_token_id(eos)
    writer.add_add_bos_token(first is not None)
    writer.add_add_eos_token(last is not None and len(single) > 1 and last != first)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
