"""What a cloze question of the quick start blanks, and which words of a passage could answer it.

data/cloze_squad.py cuts the questions and scores the rules that need no reading model;
scripts/cloze_language_model_pick.py asks a masked language model to choose among the same
words. Both read these definitions, so the rules and the probe agree on what a possible answer is.
"""
from __future__ import annotations

import re

NAME_SPAN = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+(?: [A-Z][a-z]+)*")  # capitalised words inside a sentence
# Lower-case words of 7 letters or more inside a sentence, but not the frequent function-like
# ones a reader could fill in from the question's words alone.
LONG_WORD = re.compile(r"(?<=[a-z,;] )(?!(?:himself|herself|themselves|without|something|nothing|another|because"
                       r"|through|whatever|however|perhaps|against|between|already)\b)[a-z]{7,}\b")
# What a question blanks: names (a reader's shortcut is to learn which words are names, which
# does not carry over to a held-out book's characters) or long content words (too many to
# memorise, so the question's words around the blank have to be found in the passage).
BLANKS = {"names": NAME_SPAN, "words": LONG_WORD}


def possible_answers_not_in_question(context: str, question: str, blank: re.Pattern) -> list[str]:
    """The passage's possible answers (matches of `blank`, in passage order) that the question
    does not contain: the words left to a reader who can tell which words the question shows."""
    return [word for word in blank.findall(context) if word not in question]
