"""WordPiece tokenization of BERT/ELECTRA `vocab.txt` files, on Hugging Face `tokenizers`.

The Rust tokenizer gives the same ids as BERT's reference Python tokenizer, about 20x faster,
and character offsets into the original text, which SQuAD needs to cut answers out of the
context instead of gluing WordPieces back together. English text (ASCII, typographic
punctuation, accented Latin letters when uncased) takes a faster path with the same ids: see
`WordPieceTokenizer.encode_batch_ids`.
"""
from __future__ import annotations

import io
import os
import re
import unicodedata
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Callable, Sequence

from tokenizers import PreTokenizedString, Tokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from safe_io import UserError

if TYPE_CHECKING:
    import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# BERT's WordPiece: a longer word (in characters after normalisation) is one [UNK].
MAX_INPUT_CHARS_PER_WORD = 100
# Entries of each of the fast path's two caches (chunks and words): about 30 MB each at most.
CACHE_SIZE = 1 << 17

# BERT's text cleaning drops the control characters other than tab, newline and carriage return;
# these are the ASCII ones.
_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# BERT's pre-tokenizer on cleaned ASCII text: whitespace separates, runs of letters and digits are
# words, and every other printable character is punctuation, a word of its own.
_ASCII_WORD_PATTERN = r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]"
# The Unicode blocks whose punctuation the fast path may take (see _fast_punctuation): Latin-1
# Supplement, General Punctuation, Supplemental Punctuation, CJK Symbols and Punctuation,
# Halfwidth and Fullwidth Forms.
_PUNCTUATION_BLOCKS = ((0x80, 0x100), (0x2000, 0x2070), (0x2E00, 0x2E80), (0x3000, 0x3040),
                       (0xFF00, 0xFFF0))
# The Combining Diacritical Marks block, all of category Mn: after NFD, what BERT's accent
# stripping removes from accented Latin letters.
_COMBINING_MARKS = re.compile("[\u0300-\u036f]")


@dataclass(frozen=True)
class Encoding:
    """One encoded text (or text pair): ids, their tokens and character offsets.

    `offsets[i]` is the (start, end) span of token i in the text it came from; special tokens
    have (0, 0). `segment_ids` is 0 for the first text and its [SEP], 1 for the second.
    """

    input_ids: list[int]
    segment_ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]


def load_vocab(vocab_file: str) -> dict[str, int]:
    """Read a `vocab.txt` (one token per line, id = line number) and check its special tokens."""
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file} (expected a BERT-style "
                                "vocab.txt with one WordPiece token per line)")
    with open(vocab_file, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"vocab file {vocab_file}: line {line_number} is not UTF-8 ({error.reason} at "
                        f"byte {error.start}); save it as UTF-8 text") from None
    vocab: dict[str, int] = {}
    for index, line in enumerate(io.StringIO(text, newline=None)):  # universal newlines, as open()
        token = line.rstrip("\n")
        if token and token not in vocab:
            vocab[token] = index
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise UserError(f"vocab file {vocab_file} lacks the special tokens {missing}; "
                        "expected a BERT WordPiece vocab.txt")
    return vocab


class WordPieceTokenizer:
    """BERT WordPiece tokenizer: basic cleaning, optional lower-casing and accent stripping,
    CJK characters as words, punctuation splitting, greedy longest-match WordPiece."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True,
                 cache_size: int = CACHE_SIZE):
        self.vocab_file = vocab_file
        self.do_lower_case = do_lower_case
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.vocab[t] for t in SPECIAL_TOKENS)
        self._tokenizer = self._build(self.vocab, do_lower_case)
        model = self._tokenizer.model
        self._word_ids = _BoundedCache(
            lambda word: tuple(token.id for token in model.tokenize(word)), cache_size)
        self._chunk_ids = _BoundedCache(self._split_chunk, cache_size)
        self._prefill_caches()
        punctuation = self._fast_punctuation()
        self._fast_words = re.compile(
            _ASCII_WORD_PATTERN + (f"|[{punctuation}]" if punctuation else ""))
        self._slow_character = re.compile(f"[^\\x00-\\x7f{punctuation}]")

    def _fast_punctuation(self) -> str:
        """The non-ASCII characters the fast path splits off as punctuation: those of Unicode's
        punctuation categories (P*) in _PUNCTUATION_BLOCKS that the Rust pipeline itself keeps
        as they are and makes words of their own, and that the fast path's lower-casing and
        NFD keep too. About 2 ms."""
        punctuation = []
        for char in (chr(code) for start, end in _PUNCTUATION_BLOCKS for code in range(start, end)
                     if unicodedata.category(chr(code)).startswith("P")):
            text = f"a{char}b"
            rust_words = [word for word, _ in self.pre_tokenize(text)]
            fast_form = unicodedata.normalize("NFD", text).lower() if self.do_lower_case else text
            if rust_words == ["a", char, "b"] and fast_form == text:
                punctuation.append(char)
        return "".join(punctuation)

    def _prefill_caches(self) -> None:
        """Start both caches with the vocabulary's ASCII whole words (letters and digits, or
        one punctuation character), which WordPiece maps to their own id: 8,115 of the 13,838
        distinct words of the Austen sample need no first lookup. About 6 ms for BERT's vocab."""
        whole_words = {token: (index,) for token, index in self.vocab.items()
                       if token.isascii() and (token.isalnum() or (
                           len(token) == 1 and token.isprintable() and not token.isspace()))}
        for cache in (self._word_ids, self._chunk_ids):
            if len(whole_words) <= cache.max_size:
                cache.update(whole_words)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    @property
    def cache_lengths(self) -> tuple[int, int]:
        """Chunks and words the fast path holds the ids of (each at most cache_size)."""
        return len(self._chunk_ids), len(self._word_ids)

    @staticmethod
    def _build(vocab: dict[str, int], do_lower_case: bool) -> Tokenizer:
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                               max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case,
            lowercase=do_lower_case)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.BertProcessing(
            ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        return tokenizer

    def pre_tokenize(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """The words WordPiece gets from `text`: cleaned, lower-cased and without accents when
        uncased, CJK characters and punctuation split off; each with its (start, end)
        character span in `text`."""
        pretokenized = PreTokenizedString(text)
        pretokenized.normalize(self._tokenizer.normalizer.normalize)
        self._tokenizer.pre_tokenizer.pre_tokenize(pretokenized)
        return [(word, span) for word, span, _ in
                pretokenized.get_splits(offset_referential="original", offset_type="char")]

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inv_vocab[int(i)] for i in ids]

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> Encoding:
        """Encode a text or a text pair as `[CLS] A [SEP] (B [SEP])`, with offsets."""
        return _to_encoding(self._tokenizer.encode(text, pair, add_special_tokens=add_special_tokens))

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """WordPiece ids of many texts without special tokens, the same as `encode` gives.

        The Rust pipeline costs about 3 us per token. On ASCII text BERT's normalisation and
        pre-tokenization reduce to `str.lower`, a regex and `str.split`, and chunks between
        spaces repeat, so such texts are split here and each chunk's ids come from a cache,
        about 10x faster; `_fast_form` says which other texts can take this path. The rest go
        to the Rust pipeline (parallel threads)."""
        forms = [text if text.isascii() else self._fast_form(text) for text in texts]
        if None not in forms:
            return self._encode_fast_batch(forms)
        fast_ids = iter(self._encode_fast_batch([form for form in forms if form is not None]))
        slow = self._tokenizer.encode_batch([text for text, form in zip(texts, forms)
                                             if form is None], add_special_tokens=False)
        slow_ids = (encoding.ids for encoding in slow)
        return [next(slow_ids) if form is None else next(fast_ids) for form in forms]

    def _fast_form(self, text: str) -> str | None:
        """A non-ASCII `text` as the fast path can take it, or None if only the Rust pipeline
        gives its ids. Uncased, accents are stripped first as BERT does (NFD, then the
        combining marks go), which makes accented Latin letters ASCII; then every character
        left outside ASCII must be punctuation the fast path knows (see _fast_punctuation)."""
        if self.do_lower_case:
            text = _COMBINING_MARKS.sub("", unicodedata.normalize("NFD", text))
        return None if self._slow_character.search(text) else text

    def _encode_fast_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Lower-case and clean the batch as one string (one C call each instead of one per
        text), then split it back into texts. Once control characters are gone, `str.split`
        splits on the whitespace BERT's pre-tokenizer splits on (the other characters Python
        counts as whitespace are ASCII control characters, which BERT drops, or non-ASCII ones,
        which send a text to the Rust pipeline)."""
        if not texts:
            return []
        joined = "\n".join(texts)
        if joined.count("\n") != len(texts) - 1:  # newlines inside a text: whitespace, spaces
            joined = "\n".join(text.replace("\n", " ") for text in texts)
        if self.do_lower_case:
            joined = joined.lower()
        chunk_ids = self._chunk_ids.__getitem__
        return [list(chain.from_iterable(map(chunk_ids, text.split())))
                for text in _ASCII_CONTROLS.sub("", joined).split("\n")]

    def _split_chunk(self, chunk: str) -> tuple[int, ...]:
        """Ids of a whitespace-free chunk of fast-path text ("well-known," gives 4 words):
        caching chunks spares the regex on all but their first occurrence; a chunk of letters
        and digits only is one word."""
        if chunk.isalnum():
            return self._word_ids[chunk]
        words = self._fast_words.findall(chunk)
        return tuple(chain.from_iterable(map(self._word_ids.__getitem__, words)))

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     max_length: int = 512) -> dict[str, np.ndarray]:
        """Model inputs for a batch: `input_ids`, `attention_mask`, `token_type_ids`, int32
        arrays of shape [batch, longest], truncated to `max_length` as BERT does: a pair loses
        one word piece at a time from its longer text, from the second text on ties."""
        import numpy as np  # imported here: the data builder's processes never need its 0.15 s

        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs")
        num_special = 2 if pairs is None else 3
        if max_length < num_special:
            raise ValueError(f"max_length={max_length} leaves no room for the {num_special} "
                             "special tokens [CLS]/[SEP]")
        firsts = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        seconds = (self._tokenizer.encode_batch(list(pairs), add_special_tokens=False)
                   if pairs is not None else [None] * len(firsts))
        encodings = []
        for first, second in zip(firsts, seconds):
            if second is None:
                first.truncate(max_length - num_special)
            else:
                first_length, second_length = _longest_first_lengths(
                    len(first), len(second), max_length - num_special)
                first.truncate(first_length)
                second.truncate(second_length)
            encodings.append(self._tokenizer.post_process(first, second))
        longest = max((len(e.ids) for e in encodings), default=0)
        batch = {"input_ids": np.full((len(encodings), longest), self.pad_id, dtype=np.int32),
                 "attention_mask": np.zeros((len(encodings), longest), dtype=np.int32),
                 "token_type_ids": np.zeros((len(encodings), longest), dtype=np.int32)}
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            batch["input_ids"][row, :length] = encoding.ids
            batch["attention_mask"][row, :length] = 1
            batch["token_type_ids"][row, :length] = encoding.type_ids
        return batch


class _BoundedCache(dict):
    """A dict that fills a missing key with `compute(key)` and is emptied when full, which
    bounds memory on any corpus (the frequent keys come back at once). The word cache computes
    with the Rust WordPiece model itself, so its ids are the model's, [UNK] and the
    100-character limit included."""

    def __init__(self, compute: Callable[[str], tuple[int, ...]], max_size: int):
        if max_size < 1:
            raise ValueError(f"a cache needs room for at least 1 entry, got {max_size}")
        super().__init__()
        self._compute = compute
        self.max_size = max_size

    def __missing__(self, key: str) -> tuple[int, ...]:
        if len(self) >= self.max_size:
            self.clear()
        value = self[key] = self._compute(key)
        return value


def _longest_first_lengths(first: int, second: int, budget: int) -> tuple[int, int]:
    """Lengths of a text pair cut to `budget` word pieces the way BERT's `_truncate_seq_pair`
    does: drop one piece at a time from the longer text, from the second on ties. (The Rust
    `longest_first` strategy differs: on an odd budget it gives the spare piece to the second
    text unless the first is strictly longer.)"""
    kept_first = min(first, max((budget + 1) // 2, budget - second))
    return kept_first, min(second, budget - kept_first)


def _to_encoding(encoding) -> Encoding:
    return Encoding(input_ids=list(encoding.ids), segment_ids=list(encoding.type_ids),
                    tokens=list(encoding.tokens), offsets=[tuple(o) for o in encoding.offsets])
