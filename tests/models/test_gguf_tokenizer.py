"""Tokenizers through GGUF metadata: the same ids as the original tokenizer, and as transformers'
own GGUF tokenizer loader, on a test corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGUFWriter
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from tellme.formats.gguf_file import GGUFFile
from tellme.formats.gguf_tokenizer import LLAMA3_SPLIT, tokenizer_from_gguf, write_tokenizer
from tellme.tokenizer import Tokenizer

DATA = Path(__file__).parent.parent / "data" / "shakespeare_heldout.txt"
EXTRA = ["naïve café — 東京 🚀 ünïcödé", "tabs\tand  double  spaces   and\n\n\nnewlines", "  leading spaces",
         "numbers 1234567 3.14159 and 'quotes' don't they'll", "<s> special </s> in text", ""]
VOCAB = 600


def corpus() -> list[str]:
    return DATA.read_text(encoding="utf-8").splitlines()[:400] + EXTRA


def byte_level(split: str | None) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus()[:300], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def sentencepiece_like() -> HFTokenizer:
    """Llama 2's layout: <unk> <s> </s>, 256 byte tokens, then merges learned on '▁'-joined text."""
    base = HFTokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    base.train_from_iterator(corpus()[:300], trainers.BpeTrainer(vocab_size=VOCAB))
    learned = json.loads(base.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{i:02X}>": 3 + i for i in range(256)}}
    for t in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


class NoMerges:
    """A GGUFWriter that drops the merges: SentencePiece files from llama.cpp carry scores only."""

    def __init__(self, w):
        self.w = w

    def __getattr__(self, name):
        return (lambda *_: None) if name == "add_token_merges" else getattr(self.w, name)


def to_gguf(tok: HFTokenizer, path: Path, vocab: int, with_merges=True) -> None:
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ messages[0]['content'] }}"}
    w = GGUFWriter(path, "llama")
    write_tokenizer(w if with_merges else NoMerges(w), Tokenizer(tok.to_str(), config), vocab, None, ())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


CASES = {"gpt2": lambda: byte_level(None), "llama-bpe": lambda: byte_level(LLAMA3_SPLIT),
         "sentencepiece": sentencepiece_like}


@pytest.mark.parametrize("kind", list(CASES))
def test_same_ids_as_the_original_and_as_transformers(kind, tmp_path):
    from transformers import AutoTokenizer

    original = CASES[kind]()
    path = tmp_path / "tok.gguf"
    n = original.get_vocab_size() + 8  # the model's vocabulary is larger: padded with unused ids
    to_gguf(original, path, n)
    meta = GGUFFile(path).metadata
    assert len(meta["tokenizer.ggml.tokens"]) == n
    ours = tokenizer_from_gguf(meta, str(path))
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in corpus():
        ids = original.encode(text).ids
        assert ours.encode(text) == ids, text
        assert theirs(text)["input_ids"] == ids, text
        assert ours.decode(ids) == original.decode(ids)
    assert ours.config["bos_token"] == "<s>" and ours.chat_template == "{{ messages[0]['content'] }}"


def test_sentencepiece_merges_from_scores(tmp_path):
    """llama.cpp's SentencePiece files have no merges: the scores imply them."""
    original = sentencepiece_like()
    path = tmp_path / "tok.gguf"
    to_gguf(original, path, original.get_vocab_size(), with_merges=False)
    meta = GGUFFile(path).metadata
    assert "tokenizer.ggml.merges" not in meta
    ours = tokenizer_from_gguf(meta, str(path))
    texts = corpus()
    agree = sum(ours.encode(t) == original.encode(t).ids for t in texts)
    assert agree == len(texts)
