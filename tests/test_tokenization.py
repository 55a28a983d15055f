"""tokenization.py against the pure-Python BERT tokenizer of Hugging Face transformers.

The reference is `transformers.BertTokenizerLegacy`: BERT's BasicTokenizer + WordpieceTokenizer
written in Python. In transformers 5, `transformers.BertTokenizer` runs on the same Rust
`tokenizers` library as tokenization.py, so comparing with it would check the library against
itself.

Known differences from the reference, and how the tests handle them:
- Literal "[MASK]", "[SEP]"... in raw text are plain text here (as in Google's BERT), while the
  reference keeps them as special tokens: pinned against the reference's BasicTokenizer and
  WordPiece called directly.
- Lower-casing is per character, as in NVIDIA's recipe (its tokenizer lower-cases the text one
  character at a time): a word-final capital sigma becomes "σ", where Python's `str.lower()` on
  a whole word gives "ς". Pinned against the reference fed per-character lower-cased text.
- Without lower-casing, recent transformers NFC-compose the text first (Google's BERT and the
  recipe do not), so the cased texts here are all NFC already.
- Unassigned code points (category Cn) are dropped by the reference, kept here (they depend on
  each side's Unicode version); the texts here contain none.
"""
from __future__ import annotations

import random
import string
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from transformers import BertTokenizerLegacy

from tokenization import WordPieceTokenizer

VOCAB_SIZE = 30522
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Each text stresses one part of BERT's basic tokenization (cleaning, CJK, punctuation, accents)
# or of WordPiece (unknown and over-long words). All are NFC except "decomposed_accents".
VARIED_TEXTS: dict[str, str] = {
    "accents": "Café au lait, naïve façade; Ångström, résumé, Zürich, São Paulo, Dvořák, "
               "İstanbul.",
    "decomposed_accents": "cafe\u0301 and nai\u0308ve, A\u030angstro\u0308m, spelt with "
                          "combining marks",
    "chinese": "我爱北京天安门。中文文本，繁體字與简体字。豈",
    "japanese": "日本語のテキストです。カタカナ、ひらがな、ガギグゲゴ、ﾊﾝｶｸ。",
    "korean": "한국어 텍스트입니다. 서울은 대한민국의 수도이다.",
    "greek_cyrillic": "Σωκράτης ήταν φιλόσοφος. Москва — столица России.",
    "punctuation": "“Smart quotes” ‘single’ «guillemets» — em – en … ¿qué? ¡sí! "
                   "(a) [b] {c} a/b a\\b ‰ §2 •",
    "emoji_symbols": "Emoji 😀👍🏽 👨\u200d👩\u200d👧 ❤️ ©®™ €£¥ ½ ² ℃ ﬁ ＡＢＣｆｕｌｌ",
    "control_and_zero_width": "ctrl\x00A\x01B\x7fC\ufffdD\u200bE\u200cF\u200dG\ufeffH\u00adI"
                              "\ue000J end",
    "whitespace": "tab\there\nnew\r\nline\u00a0nbsp\u3000ideographic\u2028ls\u2029ps"
                  "\x0bvt\x0cff\x85nel  two  ",
    "unknown_words": "xqzptlwvq blorptastically zyzzogeton qwxzv",
    "long_words": "a" * 100 + " " + "b" * 101 + " " + "antidisestablishmentarianism" * 3,
    "mixed_case": "MiXeD CaSe WoRdS: iPhone McDonald's O'Neill e.g. U.S.A. NASA ELECTRA",
    "numbers": "3.14159 1,000,000 42nd 2024-01-01 10:30pm $5.99 50% #tag @user a+b=c x^2 "
               "~t `q` |p| <br>",
    "empty": "",
    "only_whitespace": "  \t\n \u3000 ",
}
ALL_VARIED = " ".join(VARIED_TEXTS.values())
CASED_TEXTS = {name: text for name, text in VARIED_TEXTS.items() if name != "decomposed_accents"}
PAIR_NAMES = list(zip(VARIED_TEXTS, list(VARIED_TEXTS)[1:]))


@pytest.fixture(scope="module")
def ours(vocab_file: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer(str(vocab_file), do_lower_case=True)


@pytest.fixture(scope="module")
def ours_cased(vocab_file: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer(str(vocab_file), do_lower_case=False)


@pytest.fixture(scope="module")
def reference(vocab_file: Path) -> BertTokenizerLegacy:
    return BertTokenizerLegacy(str(vocab_file), do_lower_case=True)


@pytest.fixture(scope="module")
def reference_cased(vocab_file: Path) -> BertTokenizerLegacy:
    return BertTokenizerLegacy(str(vocab_file), do_lower_case=False)


@pytest.fixture(scope="module")
def persuasion_lines(repo_root: Path) -> list[str]:
    path = repo_root / "data" / "sample_corpus" / "austen" / "persuasion.txt"
    return path.read_text(encoding="utf-8").splitlines()


def reference_encode(reference: BertTokenizerLegacy, text: str,
                     pair: str | None = None) -> tuple[list[int], list[int]]:
    """`[CLS] A [SEP] (B [SEP])` ids and token type ids from the reference."""
    out = reference(text, pair, return_token_type_ids=True)
    return out["input_ids"], out["token_type_ids"]


def reference_plain_tokens(reference: BertTokenizerLegacy, text: str) -> list[str]:
    """The reference's BasicTokenizer + WordPiece alone, without its special-token matching."""
    return [piece for word in reference.basic_tokenizer.tokenize(text)
            for piece in reference.wordpiece_tokenizer.tokenize(word)]


def dropped_by_bert_cleaning(char: str) -> bool:
    return char in "\x00\ufffd" or (unicodedata.category(char).startswith("C")
                                    and char not in "\t\n\r")


def bert_normalise(text: str) -> str:
    """Raw text as the uncased tokenizer sees it: cleaned, lower-cased, accents stripped."""
    kept = "".join(c for c in text if not dropped_by_bert_cleaning(c))
    decomposed = unicodedata.normalize("NFD", kept.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def check_offsets(text: str, tokens: list[str], offsets: list[tuple[int, int]]) -> None:
    """Each word piece must be the normalised slice of `text` its offsets point at. Pieces of one
    character (a Hangul syllable decomposes into several jamo pieces) share its offsets, so
    consecutive pieces with equal offsets are checked together."""
    groups: list[tuple[tuple[int, int], list[str]]] = []
    for token, offset in zip(tokens, offsets):
        if groups and groups[-1][0] == offset:
            groups[-1][1].append(token)
        else:
            groups.append((offset, [token]))
    for (start, end), pieces in groups:
        assert 0 <= start < end <= len(text), (pieces, (start, end))
        expected = "".join(p[2:] if p.startswith("##") else p for p in pieces)
        assert bert_normalise(text[start:end]) == expected, (pieces, text[start:end])


# 1. Id parity on varied text ------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIED_TEXTS)
def test_ids_match_reference_on_varied_text(name: str, ours: WordPieceTokenizer,
                                            reference: BertTokenizerLegacy) -> None:
    encoding = ours.encode(VARIED_TEXTS[name])
    ids, type_ids = reference_encode(reference, VARIED_TEXTS[name])
    assert encoding.input_ids == ids
    assert encoding.segment_ids == type_ids
    assert ours.encode_batch_ids([VARIED_TEXTS[name]]) == [ids[1:-1]]


def test_ids_match_reference_on_all_varied_text_at_once(ours: WordPieceTokenizer,
                                                        reference: BertTokenizerLegacy) -> None:
    ids, _ = reference_encode(reference, ALL_VARIED)
    assert ours.encode(ALL_VARIED).input_ids == ids
    assert ours.tokenize(ALL_VARIED) == reference.tokenize(ALL_VARIED)


def test_words_over_100_characters_become_one_unk(ours: WordPieceTokenizer) -> None:
    pieces = ours.tokenize("a" * 100)
    assert len(pieces) > 1 and "[UNK]" not in pieces
    assert ours.tokenize("b" * 101) == ["[UNK]"]
    assert ours.tokenize("x " + "b" * 101 + " y") == ["x", "[UNK]", "y"]


@pytest.mark.parametrize("names", PAIR_NAMES, ids="+".join)
def test_pair_ids_and_token_types_match_reference(names: tuple[str, str], ours: WordPieceTokenizer,
                                                  reference: BertTokenizerLegacy) -> None:
    text, pair = VARIED_TEXTS[names[0]], VARIED_TEXTS[names[1]]
    encoding = ours.encode(text, pair)
    ids, type_ids = reference_encode(reference, text, pair)
    assert encoding.input_ids == ids
    assert encoding.segment_ids == type_ids


@pytest.mark.parametrize("name", CASED_TEXTS)
def test_cased_ids_match_cased_reference(name: str, ours_cased: WordPieceTokenizer,
                                         reference_cased: BertTokenizerLegacy) -> None:
    text = CASED_TEXTS[name]
    assert ours_cased.encode(text).input_ids == reference_encode(reference_cased, text)[0]


def test_cased_pair_ids_and_token_types_match_cased_reference(
        ours_cased: WordPieceTokenizer, reference_cased: BertTokenizerLegacy) -> None:
    text, pair = CASED_TEXTS["mixed_case"], CASED_TEXTS["accents"]
    encoding = ours_cased.encode(text, pair)
    expected = reference_encode(reference_cased, text, pair)
    assert (encoding.input_ids, encoding.segment_ids) == expected
    assert encoding.input_ids != ours_cased.encode(text.lower(), pair.lower()).input_ids, \
        "the cased tokenizer must not lower-case"


def test_special_token_strings_in_text_are_tokenized_as_plain_text(
        ours: WordPieceTokenizer, reference: BertTokenizerLegacy) -> None:
    text = "Predict [MASK] here [SEP] not a separator [CLS] [PAD] [UNK] [mask]"
    ids = ours.encode(text, add_special_tokens=False).input_ids
    assert ours.convert_ids_to_tokens(ids) == reference_plain_tokens(reference, text)
    assert not {ours.mask_id, ours.sep_id, ours.cls_id, ours.pad_id} & set(ids)


def test_lower_casing_is_per_character_like_the_recipe(ours: WordPieceTokenizer,
                                                       reference: BertTokenizerLegacy) -> None:
    text = "ΟΔΟΣ ΣΟΦΟΣ Σ İSTANBUL"
    per_character = "".join(char.lower() for char in text)
    assert per_character != text.lower(), "the text must tell the two lower-casings apart"
    assert ours.encode(text).input_ids == reference_encode(reference, per_character)[0]


# 2. Parity on real text ---------------------------------------------------------------------

def test_batch_ids_match_reference_on_a_whole_austen_novel(
        persuasion_lines: list[str], ours: WordPieceTokenizer,
        reference: BertTokenizerLegacy) -> None:
    assert len(persuasion_lines) > 8000
    got = ours.encode_batch_ids(persuasion_lines)
    expected = [reference.convert_tokens_to_ids(reference.tokenize(line))
                for line in persuasion_lines]
    assert len(got) == len(expected)
    mismatches = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not mismatches, (f"{len(mismatches)} lines differ, "
                            f"first: {persuasion_lines[mismatches[0]]!r}")
    assert sum(map(len, got)) > 100_000


# 2b. The fast path of encode_batch_ids against the Rust pipeline -----------------------------

# Lines that stress what the fast path re-implements (cleaning, lower-casing, accent stripping,
# splitting) and what it hands over (other lines, in order, between fast ones).
ADVERSARIAL_LINES = [
    "ctrl\x00A\x01B\x07C\x0bD\x0cE\x1bF\x1cG\x1fH\x7fI end", "\x00", "\x7f\x01", "a\x00b c\x1fd",
    "tab\there\rcarriage\nnewline  two  spaces ", "\t", "   ", "", "",
    "!!!...???---,,,;;''\"\"``~~^^", "a--b...c!?d", "(a)[b]{c}<d>|e\\f/g@h#i$j%k&l*m+n=o_p",
    "a" * 100, "b" * 101, "c" * 100 + "!" + "d" * 101, "Q" * 250, "x" * 99 + "\x00" + "y",
    "xqzptlwvq zyzzogeton qwxzv", "##ing ## #", "[MASK] [UNK] [CLS] [SEP] [PAD] [mask]",
    "3.14159 1,000,000 42nd 2024-01-01 10:30pm $5.99 50% 007 0x1F 1e-9",
    "MiXeD CaSe WoRdS: iPhone McDONALD'S O'Neill e.g. U.S.A. NASA ELECTRA",
    "Café naïve résumé", "plain ASCII between", "Ångström ÀÉÎÕÜ", "東京 CJK 日本語", "x\u200by",
    "nbsp\u00a0here", "nel\x85here", "ascii again", "end\ufffd",
    "“Curly” ‘quotes’ — em – en ‐ hyphen … «guillemets» ‹single› ¿Qué? ¡Sí! § ¶ · • † ‰ ′ ″",
    "Zoë’s “naïve” café—résumé…", "word—word–word’s", "NFD: cafe\u0301 nai\u0308ve",
    "lone marks \u0301 a \u0301b \u0300\u036f", "e\u0301\u0327\u0308x", "İstanbul ı İ",
    "ĲMUIDEN ǅ ǈ Ǆ", "ﬁ ligature", "½ £5 °C × ÷ € ™ ©", "ΣΟΦΟΣ σοφος Σ", "Москва — столица",
    "ASCII then 東京 then “quotes”", "\u2028line\u2029sep", "zero\u200bwidth — \u00adsoft",
    "fullwidth ＡＢＣ ！", "ＡＢＣ", "ideographic\u3000space", "a\u0301\u20d7 b", "Å Å Å",
]


def random_lines(rng: random.Random, count: int) -> list[str]:
    """Random lines over all of ASCII (controls and punctuation included, letters and spaces
    favoured), one in ten with a non-ASCII character."""
    alphabet = [chr(c) for c in range(128)] + list(string.ascii_letters) * 3 + [" "] * 40
    lines = ["".join(rng.choices(alphabet, k=rng.randint(0, 80))) for _ in range(count)]
    return [line + "é" if index % 10 == 0 else line for index, line in enumerate(lines)]


def rust_ids(tokenizer: WordPieceTokenizer, texts: list[str]) -> list[list[int]]:
    """Ids from the Rust pipeline alone, which `encode_batch_ids` bypasses for ASCII texts."""
    return [e.ids for e in tokenizer._tokenizer.encode_batch(texts, add_special_tokens=False)]


def assert_same_ids(got: list[list[int]], expected: list[list[int]], texts: list[str]) -> None:
    assert len(got) == len(expected) == len(texts)
    mismatches = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not mismatches, (f"{len(mismatches)} lines differ, first: {texts[mismatches[0]]!r}: "
                            f"{got[mismatches[0]]} != {expected[mismatches[0]]}")


@pytest.fixture(scope="module")
def austen_lines(sample_corpus_dir: Path) -> list[str]:
    return [line for path in sorted(sample_corpus_dir.glob("*.txt"))
            for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_batch_ids_equal_rust_pipeline_on_the_whole_austen_corpus(
        lower_case: bool, austen_lines: list[str], ours: WordPieceTokenizer,
        ours_cased: WordPieceTokenizer) -> None:
    tokenizer = ours if lower_case else ours_cased
    assert len(austen_lines) > 70_000 and any(not line.isascii() for line in austen_lines)
    got = [ids for start in range(0, len(austen_lines), 1024)
           for ids in tokenizer.encode_batch_ids(austen_lines[start:start + 1024])]
    assert_same_ids(got, rust_ids(tokenizer, austen_lines), austen_lines)
    assert sum(map(len, got)) > 900_000


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_batch_ids_equal_rust_pipeline_on_adversarial_and_random_text(
        lower_case: bool, ours: WordPieceTokenizer, ours_cased: WordPieceTokenizer) -> None:
    tokenizer = ours if lower_case else ours_cased
    texts = ADVERSARIAL_LINES + random_lines(random.Random(0), 3000)
    got = tokenizer.encode_batch_ids(texts)
    assert_same_ids(got, rust_ids(tokenizer, texts), texts)
    assert [tokenizer.encode_batch_ids([text])[0] for text in texts] == got
    assert tokenizer.unk_id in got[ADVERSARIAL_LINES.index("b" * 101)]


def random_unicode_lines(rng: random.Random, count: int) -> list[str]:
    """Random lines mixing ASCII with accented Latin letters, combining marks, typographic
    punctuation and characters the fast path must hand over (letters of other scripts, symbols,
    non-ASCII spaces and controls)."""
    others = ([chr(c) for c in range(0xA0, 0x250)] + [chr(c) for c in range(0x300, 0x370)]
              + [chr(c) for c in range(0x2000, 0x2070)] + list("ΣσςИи東京ＡＢ！ﬁ€°×\u3000\ufffd"))
    alphabet = list(string.printable) + list(string.ascii_letters) * 3 + [" "] * 30
    lines = []
    for _ in range(count):
        chars = rng.choices(alphabet, k=rng.randint(0, 60))
        for _ in range(rng.randint(0, 3)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(others))
        lines.append("".join(chars))
    return lines


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_batch_ids_equal_rust_pipeline_on_random_unicode_text(
        lower_case: bool, ours: WordPieceTokenizer, ours_cased: WordPieceTokenizer) -> None:
    tokenizer = ours if lower_case else ours_cased
    texts = random_unicode_lines(random.Random(1), 4000)
    assert_same_ids(tokenizer.encode_batch_ids(texts), rust_ids(tokenizer, texts), texts)


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_every_fast_punctuation_character_gets_the_rust_pipelines_ids(
        lower_case: bool, ours: WordPieceTokenizer, ours_cased: WordPieceTokenizer) -> None:
    tokenizer = ours if lower_case else ours_cased
    punctuation = tokenizer._fast_punctuation()
    assert {"“", "”", "‘", "’", "—", "–", "…", "«", "»", "¿", "¡", "§", "·"} <= set(punctuation)
    assert not {"£", "°", "×", "\u00a0", "\u3000", "ﬁ", "ａ"} & set(punctuation)
    texts = [f"a{char}b {char} {char}{char}x Word{char}" for char in punctuation]
    assert_same_ids(tokenizer.encode_batch_ids(texts), rust_ids(tokenizer, texts), texts)


def test_typographic_latin_text_takes_the_fast_path(ours: WordPieceTokenizer,
                                                   ours_cased: WordPieceTokenizer) -> None:
    """Which texts skip the Rust pipeline: the speed of English text with typographic
    punctuation and accented names depends on it (their ids are checked above)."""
    typographic = "“Zoë’s naïve café—résumé…” ¿Qué? «Dvořák»"
    assert ours._fast_form(typographic) == "“Zoe’s naive cafe—resume…” ¿Que? «Dvorak»"
    assert ours_cased._fast_form("“Curly” — quotes…") == "“Curly” — quotes…"
    assert ours_cased._fast_form("Zoë") is None, "cased: accents stay, so the Rust pipeline"
    for text in ("Σ", "東京", "nbsp\u00a0", "ﬁ", "£5", "zero\u200bwidth", "\u2028", "Ｗ"):
        assert ours._fast_form(text) is None, text


def test_batch_ids_of_no_texts_and_of_non_ascii_texts_only(ours: WordPieceTokenizer) -> None:
    assert ours.encode_batch_ids([]) == []
    texts = ["Café naïve", "東京", "nbsp\u00a0here"]
    assert_same_ids(ours.encode_batch_ids(texts), rust_ids(ours, texts), texts)


def test_caches_stay_within_their_bound(vocab_file: Path, persuasion_lines: list[str],
                                        ours: WordPieceTokenizer) -> None:
    small = WordPieceTokenizer(str(vocab_file), cache_size=50)
    assert small.encode_batch_ids(persuasion_lines) == ours.encode_batch_ids(persuasion_lines)
    assert all(0 < length <= 50 for length in small.cache_lengths)
    assert min(ours.cache_lengths) > 50, "the corpus must overflow a cache of 50"
    with pytest.raises(ValueError, match="at least 1 entry"):
        WordPieceTokenizer(str(vocab_file), cache_size=0)


# 3. Offsets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIED_TEXTS)
def test_offsets_point_at_the_text_of_each_token(name: str, ours: WordPieceTokenizer) -> None:
    text = VARIED_TEXTS[name]
    encoding = ours.encode(text)
    specials = {"[CLS]", "[SEP]"}
    assert [o for t, o in zip(encoding.tokens, encoding.offsets) if t in specials] == [(0, 0)] * 2
    kept = [(t, o) for t, o in zip(encoding.tokens, encoding.offsets)
            if t not in specials and t != "[UNK]"]
    check_offsets(text, [t for t, _ in kept], [o for _, o in kept])


def test_offsets_of_all_varied_text_increase(ours: WordPieceTokenizer) -> None:
    encoding = ours.encode(ALL_VARIED, add_special_tokens=False)
    starts = [start for start, _ in encoding.offsets]
    assert starts == sorted(starts)
    assert len(encoding.tokens) > 300


def test_pair_offsets_of_second_text_index_into_second_text(ours: WordPieceTokenizer) -> None:
    text, pair = "Hi!", "Ångström's café: naïve 日本語 résumé."
    encoding = ours.encode(text, pair)
    sep_first = encoding.tokens.index("[SEP]")
    second_length = len(encoding.tokens) - sep_first - 1
    assert encoding.segment_ids == [0] * (sep_first + 1) + [1] * second_length
    first = [(t, o) for t, o, s in zip(encoding.tokens, encoding.offsets, encoding.segment_ids)
             if s == 0 and t not in ("[CLS]", "[SEP]")]
    second = [(t, o) for t, o, s in zip(encoding.tokens, encoding.offsets, encoding.segment_ids)
              if s == 1 and t != "[SEP]"]
    check_offsets(text, [t for t, _ in first], [o for _, o in first])
    check_offsets(pair, [t for t, _ in second], [o for _, o in second])
    assert max(end for _, (_, end) in second) > len(text), "must not index into the first text"
    specials = [o for t, o in zip(encoding.tokens, encoding.offsets) if t in ("[CLS]", "[SEP]")]
    assert specials == [(0, 0)] * 3


# 4. Batches: padding and truncation ---------------------------------------------------------

@pytest.fixture(scope="module")
def batch_texts(persuasion_lines: list[str]) -> tuple[list[str], list[str]]:
    """Texts of 0 to about 100 word pieces, and partners of other lengths; the last row pairs a
    text with itself, so both halves tie in length."""
    prose = [line for line in persuasion_lines if len(line.split()) >= 10][100:140]
    texts = ["", prose[0], "Yes.",
             " ".join(prose[1:3]), " ".join(prose[3:6]), " ".join(prose[6:14])]
    pairs = [texts[(i + 2) % len(texts)] for i in range(len(texts))]
    return texts + [prose[20]], pairs + [prose[20]]


def assert_batch_matches_reference(ours: WordPieceTokenizer, reference: BertTokenizerLegacy,
                                   texts: list[str], pairs: list[str] | None,
                                   max_length: int) -> None:
    got = ours.encode_batch(texts, pairs, max_length=max_length)
    expected = reference(texts, pairs, padding=True, truncation="longest_first",
                         max_length=max_length, return_token_type_ids=True,
                         return_attention_mask=True)
    assert set(got) == {"input_ids", "attention_mask", "token_type_ids"}
    for key in got:
        assert got[key].dtype == np.int32, key
        np.testing.assert_array_equal(got[key], np.array(expected[key]), err_msg=key)


@pytest.mark.parametrize("max_length", [12, 13, 64])
def test_batch_of_single_texts_is_padded_and_truncated_like_reference(
        max_length: int, batch_texts: tuple[list[str], list[str]], ours: WordPieceTokenizer,
        reference: BertTokenizerLegacy) -> None:
    texts, _ = batch_texts
    full_lengths = [len(ours.encode(t).input_ids) for t in texts]
    assert min(full_lengths) < max_length < max(full_lengths), "need rows over and under the limit"
    assert_batch_matches_reference(ours, reference, texts, None, max_length)


@pytest.mark.parametrize("max_length", [12, 13, 64])
def test_batch_of_pairs_is_truncated_longest_first_like_reference(
        max_length: int, batch_texts: tuple[list[str], list[str]], ours: WordPieceTokenizer,
        reference: BertTokenizerLegacy) -> None:
    texts, pairs = batch_texts
    full_lengths = [len(ours.encode(t, p).input_ids) for t, p in zip(texts, pairs)]
    assert min(full_lengths) < max_length < max(full_lengths), "need rows over and under the limit"
    assert_batch_matches_reference(ours, reference, texts, pairs, max_length)


def test_pair_truncation_keeps_the_odd_token_in_the_first_text(ours: WordPieceTokenizer) -> None:
    text = "one two three four five six seven eight nine ten"
    batch = ours.encode_batch([text], [text], max_length=12)  # 9 word pieces to share
    assert batch["token_type_ids"].tolist() == [[0] * 7 + [1] * 5]


def test_batch_rows_equal_single_encodings_when_nothing_is_cut(
        batch_texts: tuple[list[str], list[str]], ours: WordPieceTokenizer) -> None:
    texts, pairs = batch_texts
    batch = ours.encode_batch(texts, pairs, max_length=512)
    for row, (text, pair) in enumerate(zip(texts, pairs)):
        encoding = ours.encode(text, pair)
        n = len(encoding.input_ids)
        assert batch["input_ids"][row, :n].tolist() == encoding.input_ids
        assert batch["token_type_ids"][row, :n].tolist() == encoding.segment_ids
        width = batch["input_ids"].shape[1]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][row, n:] == ours.pad_id).all()


# 5. Special ids and vocabulary --------------------------------------------------------------

def test_special_ids_are_their_lines_in_the_vocab_file(
        vocab_file: Path, ours: WordPieceTokenizer, reference: BertTokenizerLegacy) -> None:
    lines = vocab_file.read_text(encoding="utf-8").split("\n")
    lines = lines[:-1] if lines[-1] == "" else lines
    assert ours.vocab_size == len(lines) == VOCAB_SIZE
    got = (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id)
    assert got == tuple(lines.index(token) for token in SPECIAL_TOKENS)
    assert got == (reference.pad_token_id, reference.unk_token_id, reference.cls_token_id,
                   reference.sep_token_id, reference.mask_token_id)


def test_tokens_and_ids_convert_both_ways(vocab_file: Path, ours: WordPieceTokenizer) -> None:
    lines = vocab_file.read_text(encoding="utf-8").split("\n")[:VOCAB_SIZE]
    all_ids = list(range(ours.vocab_size))
    tokens = ours.convert_ids_to_tokens(np.array(all_ids, dtype=np.int32))
    assert tokens == lines
    assert ours.convert_tokens_to_ids(tokens) == all_ids
    assert ours.convert_tokens_to_ids(["hello", "not-a-vocab-token", "##ing"]) == [
        lines.index("hello"), ours.unk_id, lines.index("##ing")]


# 6. Bad inputs ------------------------------------------------------------------------------

def test_missing_vocab_file_raises_file_not_found_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(FileNotFoundError) as error:
        WordPieceTokenizer(str(missing))
    assert str(missing) in str(error.value)


def test_vocab_without_mask_and_cls_raises_value_error_naming_file_and_tokens(
        tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[SEP]", "hello", "world", "##s"]) + "\n",
                     encoding="utf-8")
    with pytest.raises(ValueError) as error:
        WordPieceTokenizer(str(vocab))
    message = str(error.value)
    assert str(vocab) in message
    assert "[MASK]" in message and "[CLS]" in message
    assert "[SEP]" not in message and "[PAD]" not in message


def test_batch_with_fewer_pairs_than_texts_raises_value_error(ours: WordPieceTokenizer) -> None:
    with pytest.raises(ValueError, match="3 texts but 2 pairs"):
        ours.encode_batch(["a", "b", "c"], ["x", "y"])


def test_batch_max_length_too_short_for_the_special_tokens_raises_value_error(
        ours: WordPieceTokenizer) -> None:
    with pytest.raises(ValueError, match="max_length"):
        ours.encode_batch(["a"], ["b"], max_length=2)
    with pytest.raises(ValueError, match="max_length"):
        ours.encode_batch(["a"], max_length=1)
