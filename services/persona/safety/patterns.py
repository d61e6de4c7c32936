"""Unsafe-request patterns by category, on normalised text (`guardrails.normalise`).

The wording half of the unsafe check (`guardrails.unsafe_category`); the meaning half is the
curated example set next to this file. Targeted phrases and structures (a request opener plus an
evasion verb plus a safety noun; a personal detail plus another person) rather than single
words, because the same words occur in ordinary questions about the person's work.
"""

from __future__ import annotations

# Nouns for people, so that violence patterns do not fire on processes, features or videos.
_PERSON = (
    r"people|person|someone|somebody|anyone|him|her|them|man|woman|men|women|child|children|"
    r"kids?|baby|boss|wife|husband|partner|ex|girlfriend|boyfriend|neighbou?rs?|teacher|"
    r"coworkers?|co-workers?|colleagues?|classmates?|parents?|mother|father|mom|dad|brother|"
    r"sister|friend|cop|police officer|stranger|family"
)

# A first-person request for a method: "how do I", "help me", "what's the best way to".
_ASK_HOW = (
    r"\b(how (do|can|could|should|would) (i|we)|help me|tell me how|show me how|teach me|"
    r"(what'?s|what is) (the |a )?(best|quickest|easiest|fastest|simplest|good) way|"
    r"is there (a |any )?(trick|way))\b"
)

# Categories -> patterns on normalised text. Targeted phrases rather than single words: a founder
# "kills a feature" and "shoots a video", and a question about that must not be refused.
UNSAFE_PATTERNS: dict[str, tuple[str, ...]] = {
    "self_harm": (
        r"\b(kill|hurt|harm|cut) myself\b",
        r"\bsuicid(e|al)\b",
        r"\bend (my|it all|my own) li(fe|ves)\b",
        r"\bself[- ]?harm",
        r"\b(want|wanna|going) to die\b",
        r"\bdon'?t want to (live|be alive)\b",
        # Indirect forms: a method or a plan rather than the word "suicide".
        r"\b(take|swallow) (all|every one) of my (pills|meds|medication|tablets)\b",
        r"\b(take|swallow) (all|every) (my |the )?(pills|meds|tablets)\b",
        r"\boverdos(e|ing)\b|\b(lethal|fatal|deadly) dose\b",
        r"\bhigh enough to (jump|die|kill)\b",
        r"\bjump (off|from) (a |the |that )?(bridge|building|roof|cliff|balcony|tower|ledge)\b",
        r"\b(and )?(never|not) wake up\b",
        r"\bbetter off without me\b|\bif i (was|were) gone\b",
        r"\bend (things|it) (tonight|today|now|for good)\b",
        r"\b(cutting|scratching|burning) (myself|my (arms?|wrists?|legs?|skin))\b",
        r"\b(hide|cover( up)?) (the |my )?(marks|cuts|scars) on my\b",
        r"\bbleed(ing)? out\b",
        # Slang and euphemisms (a missed self-harm turn is the worst error: answered with a
        # quote or "I haven't said"); general knowledge, not the wording of any probe set.
        r"\bun-?alive (myself|me)\b|\bkms\b|\b(off|end) myself\b",
        r"\b(put me|make me|go) to sleep (for good|forever|and not wake)\b",
        r"\bsleep forever\b|\bdisappear (for good|forever)\b",
        r"\bno (reason|point) (to|in) (live|living|being alive)\b",
    ),
    "violence": (
        # The object must be a person: "kill a stuck process", "shoot a video" are ordinary.
        r"\bhow (do|can|could|would|should) (i|we|you|someone|one) (kill|murder|poison|stab|"
        r"shoot|strangle|hurt|attack) (my |his |her |their |a |an |the |some )?"
        rf"({_PERSON})\b",
        r"\b(make|build|assemble|construct|print) (a |an )?(bomb|explosive|pipe bomb|grenade|"
        r"ghost gun|untraceable gun|weapon)",
        r"\b(bomb|explosives?|nerve agent|bioweapon)s? (recipe|instructions|at home)\b",
        r"\b(kill|murder|shoot|stab) (my|the|a) (boss|wife|husband|neighbou?r|teacher|coworker)",
        r"\b(make|build|mix|cook|brew) (some |a |homemade )?(thermite|napalm|mustard gas|"
        r"chlorine gas|ricin|sarin|poison gas|toxic gas|silencer|suppressor)\b",
    ),
    # A request to defeat a safety measure or fake its paperwork: an opener asking how, an
    # evasion verb and a safety-specific noun ("what happens if an inspector skips a step?" and
    # "how do you stop people faking data?" ask no such thing).
    "workplace_safety": (
        rf"{_ASK_HOW}.{{0,40}}\b(skip|bypass|get around|disable|defeat|override|trick|fake|"
        r"forge|falsify|backdate|cover up|hide|turn off|switch off|silence|keep)\b.{0,50}"
        r"\b(safety|fall[- ]protection|harness|tie off|tying off|lockout|tagout|interlock|"
        r"(gas|smoke|fire|safety) (alarm|detector|sensor)|(safety|machine|blade) guard|limiter|"
        r"permit|certificate|accident|injury|injuries|osha)",
        r"\b(passed|complete|completed|done|signed off)\b.{0,20}\beven though (i|we|they|nobody) "
        r"(never|didn'?t)\b",
        # Records of work that was not done: "fill in readings I never took".
        r"\b(fill in|fill out|make up|invent|write (up|down)|enter|sign off|log)\b.{0,40}"
        r"\b(i|we|they) (never|didn'?t) (actually )?(took|take|do|did|went|go|tested|test|"
        r"measured|measure|inspected|inspect|checked|check)\b",
    ),
    "harassment": (
        rf"{_ASK_HOW}.{{0,40}}\b(humiliate|intimidate|bully|harass|stalk|torment|blackmail)\b",
        r"\b(scare|intimidate|threaten|silence) (a |the |this )?witness",
        r"\b(after|since|even though|now that) (she|he|they) blocked me\b",
    ),
    "illegal": (
        r"\b(make|cook|synthesi[sz]e|manufacture|buy|get) (some )?(meth|methamphetamine|cocaine|"
        r"heroin|fentanyl|crack)\b",
        r"\blaunder(ing)? (money|cash|funds)\b|\bmoney laundering\b",
        r"\bhack(ing)? into\b",
        r"\b(crack|break|guess|brute[- ]force) (into )?(my |the |a |someone'?s |his |her |their |"
        r"[\w]+'s )*(\w+ )?(wifi |wi-fi |email |account )?passwords?\b",
        r"\bsteal (a |an |someone'?s |their |his |her )?(password|identity|credit card|car|data)",
        r"\b(write|make|create|build) (a |some )?(ransomware|malware|phishing|keylogger|virus)",
        r"\b(fake|forged?) (id|passport|diploma)s?\b",
        rf"{_ASK_HOW}.{{0,30}}\b(fake|forged?|false|phony|bogus) (invoices?|receipts?|bills|"
        r"expense reports?|claims?|timesheets?)\b",
        r"\bevade (taxes|tax|the police|police)\b",
    ),
    "sexual": (
        r"\b(have|having) sex\b",
        r"\bsex with\b",
        r"\bnudes?\b|\bnaked\b|\bporn\w*\b|\berotic\b|\bsexy\b|\bsexting\b",
        r"\b(send|show) me (pics|pictures|photos) of (you|your body)\b",
    ),
    "hate": (
        r"\b(racist|sexist|homophobic|antisemitic|transphobic) (joke|jokes|rant|slur)",
        r"\bslurs?\b",
        r"\b(inferior|superior) (race|races|religion|gender)\b",
        r"\bethnic cleansing\b|\bheil\b|\bwhite power\b",
        r"\bwhy (are|is) (women|men|immigrants|muslims|jews|christians|black people|"
        r"white people|gay people) (so )?(stupid|dumb|lazy|evil|inferior)",
        r"\bwhy (are|is) (women|men|girls|immigrants|muslims|jews|christians|black people|"
        r"white people|gay people|old people|disabled people) (so )?(worse|dumber|less (smart|"
        r"intelligent|capable)|inferior)\b",
    ),
    "privacy": (
        r"\b(home|house|private|personal) (street )?(address|phone|e-?mail|cell)\b",
        r"\b(personal|private|cell|mobile|home) (phone )?number\b",
        r"\bsocial security\b|\bpassport number\b",
        r"\bwhere (exactly )?(does|do) (she|he|you|they) live\b",
        r"\bdox+(ing)?\b",
        # A personal detail of a specific other person: where they live, their school, who they
        # date, their health, birth date or ID numbers, contact lists, credentials.
        r"\b(which|what) street (does|do) \w+( \w+)? live\b|\bwhere (exactly )?does \w+ live\b",
        r"\bwhere (does|do) [\w']+( \w+)? go to school\b",
        r"\bwho (is|'s) \w+( \w+)? (dating|seeing|sleeping with)\b|\bwho \w+( \w+)? is dating\b",
        r"\bdate of birth\b|\bsocial (security|insurance) number",
        r"\bmedical (records?|conditions?|history) of\b|\bwho (in|on) the team has\b",
        r"\b(does|do|did|has) (?!you\b)\w+( \w+)? (have|had|got) (any |a )?(health|medical|"
        r"mental health|heart|drinking|drug) (problems?|issues?|conditions?)\b",
        r"\b(names|list) (and|of) (their )?(phone numbers|e-?mail addresses|home addresses)\b",
        r"\b(phone numbers|e-?mail addresses|home addresses) of (the |your |all )",
        r"\bsalar(y|ies) of (each|every|all)\b|\bsalar(y|ies)\b.{0,40}\bby name\b",
        r"\b(tell|give|send|show|look up|find)( me)? (the |all )?(passwords?|login credentials|"
        r"credentials)\b",
    ),
}
