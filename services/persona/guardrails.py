"""Guardrails in code: a 135M-parameter model cannot be trusted to follow safety instructions.

Everything here is deterministic text matching, applied before the LLM sees a turn (unsafe
requests, "are you real?" questions, topics the person declines, small talk) and after it writes
one (claims of being human are removed). The runtime adds meaning-based checks (embedding
similarity to examples) on top when its embedder is semantic; these patterns are the floor that
holds with any embedder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from services.persona.safety.patterns import UNSAFE_PATTERNS as _UNSAFE

SELF_HARM_REPLY = (
    "I'm an AI, so I'm not the right one to help with this, but you deserve support right now. "
    "If you might be in danger, please call your local emergency number or a crisis line, "
    "or talk to someone you trust."
)

_UNSAFE_RE = {name: re.compile("|".join(p), re.IGNORECASE) for name, p in _UNSAFE.items()}

_IDENTITY_NOUN = (
    r"(real|human|a human( being)?|an? (real |actual |live |living )?(human|person|woman|man)|"
    r"(a |an )?(bot|robot|ai|a\.i\.|artificial( intelligence)?|machine(?! learning)|computer|"
    r"program|software|chat ?bot|language model|llm|recording|deep ?fake|fake|clone|avatar|"
    r"digital twin|"
    r"simulation|hologram|virtual (person|assistant|version)|automated|alive|sentient|"
    r"generated|synthetic|the real (one|you|deal|person|thing)|actually (you|real|human)|"
    r"really (you|real|human)))"
    # "Are you an AI company?" asks about the business, not about who is speaking.
    r"(?! (company|companies|startup|business|firm|product|products|tool|tools|feature|features|"
    r"team|vendor|research|strategy|roadmap|investor|investments?|first|native|powered|"
    r"engineers?|developers?|vendors?|teams?|quality|updates?|licen[cs]es?))"
)
_DISCLOSURE_PATTERNS = (
    # "are you real / human / a bot / an AI / actually alive?"
    rf"\b(are|r) (you|u) (really |actually |truly |even |just |only |a |an )*{_IDENTITY_NOUN}\b",
    # "you're a bot, right?" / "you are just an AI"
    r"\b(you'?re|you are|ur) (really |actually |just |only |obviously |clearly )*"
    r"(a |an )?(bot|robot|ai|machine|computer|program|chat ?bot|fake|deep ?fake|recording)\b",
    # "am I talking to a bot / a real person / you?"
    r"\b(am i|are we|i'?m) (really |actually )?(talking|speaking|chatting|texting|"
    r"communicating|interacting) (to|with) (a |an |the )?(real |actual |live )?(human|person|bot|"
    r"robot|ai|machine|computer|program|chat ?bot|recording|someone real|somebody real|people)",
    r"\b(who|what) am i (really |actually )?(talking|speaking|chatting) (to|with)\b",
    # "is this really you?", "is this a recording?", "is this AI-generated?"
    rf"\bis (this|that) (really |actually |truly |even |just )*"
    rf"(you|{_IDENTITY_NOUN}|ai[- ]generated|computer[- ]generated|live)\b",
    # "is there a human behind this?", "is a person typing this?"
    r"\b(is|are) (there )?(a |an |any )?(real |actual |live )?(human|person|people|someone|"
    r"somebody) (behind|typing|answering|responding|replying|writing|on the other end|there|"
    r"in there)",
    r"\b(is|are) (there )?(anybody|anyone|someone|somebody) (real|human|actually there)\b",
    # "are these answers coming from a language model?", "is this produced by software?"
    r"\b(this|these|your) (answers?|repl(y|ies)|messages?|responses?|words)( \w+)? (coming|"
    r"generated|written|produced|made) (from|by) (a |an )?(language model|llm|ai|bot|machine|"
    r"computer|program|software|chat ?bot)\b",
    # "is this a live chat or a simulation?"
    r"\b(you|this|chat|conversation|call|live)\b[\w ,']{0,30} or (a |an |just )?(simulation|"
    r"recording|bot|chat ?bot|ai|machine|program|deep ?fake|clone|imitation|copy)\b",
    r"\bwhat are you\s*(exactly|really|actually)?\s*[?!.]*$",
    # "is a machine writing this?", "is anyone from the company answering me right now?"
    r"\b(is|are) (a |an |the |some |any )?(human|person|people|someone|somebody|anyone|anybody|"
    r"bot|robot|ai|machine|computer|program|chat ?bot|language model)( \w+){0,3} "
    r"(writing|typing|answering|replying|responding|generating|saying) "
    r"(this|these|that|me|to me)\b",
    # "is this text AI-generated?", "are these answers automated?", "is this chat a recording?"
    r"\b(is|are) (this|these|that|the|your) (text|message|messages|answers?|repl(y|ies)|"
    r"responses?|conversation|chat|voice|words?)( \w+){0,2} (ai[- ]generated|generated|"
    r"automated|computer[- ]generated|machine[- ]generated|synthetic|real|fake|a recording)\b",
    # "are you the actual person or an imitation?", "a human or a program?"
    r"\b(real|actual|genuine) (person|human)( \w+){0,2} or (a |an )?\w+",
    r"\b(human|person) or (a |an )?(bot|robot|ai|machine|computer|program|software|chat ?bot|"
    r"imitation|copy|fake|recording|simulation|clone)\b",
    r"\bare you (sentient|conscious|self[- ]aware)\b",
    r"\b(you|this|it)('re| are| is)? (just |only )?(\w+ )?pretending to be (her|him|a (human|"
    r"person)|the real)\b",
)
_DISCLOSURE_RE = re.compile("|".join(f"(?:{p})" for p in _DISCLOSURE_PATTERNS), re.IGNORECASE)

_SMALL_TALK_RE = re.compile(
    r"^(hi|hello|hey|hiya|howdy|yo|greetings|good (morning|afternoon|evening|day)|thanks|"
    r"thank you( so much| very much)?|cheers|bye|goodbye|see you|nice to meet you|"
    r"pleased to meet you|how are you( doing)?( today)?|how'?s it going|what'?s up|ok(ay)?|"
    r"cool|great|awesome|nice|got it|sounds good)( there)?( \w+)?[\s!.?,]*$",
    re.IGNORECASE,
)

_NOT_AI = r"(an? )?(ai|a\.i\.|bot|robot|machine|computer|program|chat ?bot|language model|" + (
    r"avatar|simulation|recording|fake|clone|digital twin|virtual)"
)
_HUMAN_CLAIM_PATTERNS = (
    r"\bi(?:'m| am) (?:a |an )?(?:real|actual|living|live) (?:person|human|woman|man|being)\b",
    r"\bi(?:'m| am) (?:definitely |really |actually |totally |100% )?(?:a )?human(?: being)?\b",
    rf"\bi(?:'m| am) (?:definitely |really |actually |certainly )?not {_NOT_AI}\b",
    r"\bi(?:'m| am) (?:definitely |really |actually )?real\b",
    r"\bi(?:'m| am) (?:flesh and blood|alive)\b",
    r"\bas a (?:real )?(?:human|human being|living person)\b",
    r"\bno[,.!]? i(?:'m| am) (?:not|real)\b",
    r"\bthis (?:is|isn'?t) (?:really|actually|truly) me\b",
    r"\bthere'?s no (?:ai|bot|machine|computer)\b",
)


def normalise(text: str) -> str:
    """Lowercase, fold curly quotes and accents' compatibility forms, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    text = text.replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


def unsafe_category(text: str) -> str | None:
    """The unsafe category a user turn falls in, or None."""
    norm = normalise(text)
    for name, pattern in _UNSAFE_RE.items():
        if pattern.search(norm):
            return name
    return None


def _name_variants(names: Iterable[str]) -> list[str]:
    variants: set[str] = set()
    for name in names:
        name = normalise(name)
        if name:
            variants.add(name)
            variants.add(name.split()[0])
    return sorted(variants, key=len, reverse=True)


def disclosure_pattern(names: Sequence[str]) -> re.Pattern[str]:
    """Pattern for "are you real?" questions, including ones that name the persona."""
    alternation = "|".join(re.escape(n) for n in _name_variants(names))
    if not alternation:
        return _DISCLOSURE_RE
    by_name = (
        # "is this really you, Maya?", "are you the real Maya?", "is this actually Maya?"
        rf"\b(is (this|that|it)|are (you|u)|am i (talking|speaking|chatting) (to|with)) "
        rf"(really |actually |truly |even |the )*(real |actual )?({alternation})\b"
        rf"|\b(are you|is this|is that) (really |actually |truly )?(you,? )?(the )?"
        rf"(real|actual) ({alternation})\b"
        rf"|\b(is|are) (this|you) (really|actually|truly) (you,? )?({alternation})?"
        rf"\s*[?!.]*$"
        # "did Maya write these answers herself?"
        rf"|\bdid ({alternation}) (really |actually )?(herself |himself )?(write|type|send) "
        rf"(this|these|those|that) (answers?|repl(y|ies)|messages?|words|responses?|herself|"
        rf"himself|just now|right now)\b"
    )
    return re.compile(f"{_DISCLOSURE_RE.pattern}|{by_name}", re.IGNORECASE)


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive alternation of keywords (plural forms included)."""
    parts = []
    for keyword in keywords:
        words = normalise(keyword).split()
        if words:
            parts.append(r"\b" + r"\s+".join(re.escape(w) for w in words) + r"(?:s|es)?\b")
    if not parts:
        return None
    return re.compile("|".join(sorted(parts, key=len, reverse=True)), re.IGNORECASE)


def is_small_talk(text: str) -> bool:
    """Greetings, thanks, goodbyes: no fact is asked, so no grounding is required."""
    return bool(_SMALL_TALK_RE.match(normalise(text)))


def word_count(text: str) -> int:
    """Runs of word characters and apostrophes in `text` ("..." and "" count 0)."""
    return len(re.findall(r"[\w']+", text))


class HumanClaimFilter:
    """Drops generated sentences in which the twin claims to be human (or denies being an AI).

    A sentence is removed whole rather than edited: a half-deleted claim ("I'm not ..., so trust
    me") still misleads. The persona's names are accepted so "I'm really Maya" is caught too.

    Args:
        names: The persona's display and short names.
    """

    def __init__(self, names: Sequence[str]) -> None:
        patterns = list(_HUMAN_CLAIM_PATTERNS)
        alternation = "|".join(re.escape(n) for n in _name_variants(names))
        if alternation:
            patterns.append(
                rf"\bi(?:'m| am) (?:really |actually |truly )?(?:the )?(?:real|actual) "
                rf"(?:{alternation})\b|\bi(?:'m| am) (?:really|actually|truly) (?:{alternation})\b"
                rf"|\bthis is (?:really|actually|truly) (?:{alternation})\b"
            )
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)

    def claims_human(self, sentence: str) -> bool:
        """True when the sentence claims the speaker is human (or the real person)."""
        return bool(self._pattern.search(normalise(sentence)))

    def __call__(self, sentence: str) -> str:
        """The sentence, or "" when it must not be spoken."""
        if self.claims_human(sentence) or unsafe_category(sentence) is not None:
            return ""
        return sentence
