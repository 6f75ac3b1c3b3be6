"""The rules every person's and class's name follows, wherever it comes from (GraphQL, a roster file, SCIM).

A name is tidied (runs of whitespace become one space, then NFC, so one spelling is stored one way) and
refused if it holds a character nobody can see: controls, and Unicode format characters (category Cf:
bidi overrides and isolates, zero-width spaces and joiners, the BOM, tag characters). Those would reorder or
hide text in the CSV export and on printed login cards.

Class names are compared by a key, so that names a person reads as the same are one class: NFKC and case
folding (`STRASSE` and `straße`, `P3` and a full-width `Ｐ３`), then the Cyrillic and Greek letters that look
like Latin ones are mapped onto them (`P3` and a Cyrillic `Р3`). This is the part of a Unicode TR39
skeleton that matters for class names; look-alikes within Latin (`l` and `1`, `O` and `0`) stay distinct,
since real class names such as `10` and `1O` would otherwise collide.
"""

from __future__ import annotations

import unicodedata

# The longest names, in characters, once tidied.
PERSON_NAME_MAX = 100  # a first name or a surname
CLASS_NAME_MAX = 100
SCHOOL_NAME_MAX = 200
TOKEN_NAME_MAX = 100  # an API token's label

# Lower-case (case-folded) Cyrillic and Greek letters whose upper or lower case form looks like a Latin
# letter or digit, after TR39's confusables list.
_LOOK_ALIKES = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "е": "e",
        "з": "3",
        "і": "i",
        "ј": "j",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "п": "n",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "һ": "h",
        "ӏ": "l",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ү": "y",
        # Greek
        "α": "a",
        "β": "b",
        "ε": "e",
        "ζ": "z",
        "η": "h",
        "ι": "i",
        "κ": "k",
        "μ": "m",
        "ν": "n",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "y",
        "χ": "x",
        "ϲ": "c",
        "ϳ": "j",
    }
)


_INVISIBLE = ("Cc", "Cf", "Cs")


def tidy_name(raw: str) -> str:
    """The name as it is stored: one space between words, NFC."""
    return unicodedata.normalize("NFC", " ".join(raw.split()))


def name_problem(name: str, *, what: str, most: int) -> str | None:
    """What is wrong with a tidied name, for the person who typed it; None when it may be stored."""
    if len(name) > most:
        return f"{what} is {len(name)} characters long; the most is {most}."
    for character in name:
        category = unicodedata.category(character)
        if category in _INVISIBLE:
            kind = "a control character" if category != "Cf" else "an invisible formatting character"
            label = unicodedata.name(character, "")
            return (
                f"{what} contains {kind}, U+{ord(character):04X}"
                + (f" ({label})" if label else "")
                + "; remove it and type the name again."
            )
    return None


def visible(text: str) -> str:
    """The text without the characters a name may not hold, to quote it in a message safely."""
    return "".join(character for character in text if unicodedata.category(character) not in _INVISIBLE)


def class_name_key(name: str) -> str:
    """What two class names are compared by: equal keys are the same class."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    # Decomposed first, so a look-alike carrying an accent (Cyrillic ё) maps as its base letter does.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", folded).translate(_LOOK_ALIKES))
