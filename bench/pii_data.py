"""A seeded, generated, labelled PII set (issue 15, acceptance 2): Faker-style templates with
known spans, no Faker (our own seeded generators), several entity types, and hard negatives
(order and tracking numbers, versions, dates and times, card-like numbers that fail Luhn,
IBAN-like strings that fail mod 97, SSN-like numbers outside the rules).

``generate(n, seed)`` returns ``n`` ``Sample``s: the text and its gold spans ``(start, end,
entity)``. Entity types: EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN,
IP_ADDRESS, PERSON, SECRET (one of the secret kinds ``farebox.guardrails.secrets`` knows).
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony "
    "Betty Mark Sandra Paul Ashley Steven Emily Andrew Michelle Kevin Amanda Brian Melissa "
    "George Rebecca Olivia Lucas Sophie Hannah Maria Ahmed Priya Wei Yuki Carlos Elena"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis "
    "Robinson Walker Young Allen King Wright Scott Green Baker Adams Nelson Carter Mitchell "
    "Roberts Turner Phillips Campbell Parker Evans Edwards Collins Stewart Morris Murphy Cook"
).split()
DOMAINS = ("example.com", "mail.example.org", "acme.io", "contoso.co.uk", "corp.example.net",
           "uni-example.edu", "gmail.com", "outlook.com")  # fmt: skip
# assigned US area codes (a random 3-digit number often is not one, and libphonenumber knows)
US_AREAS = (201, 202, 206, 212, 213, 214, 303, 305, 310, 312, 347, 404, 415, 469, 503, 510,
            512, 571, 602, 615, 617, 628, 646, 702, 703, 713, 718, 773, 818, 917, 929)  # fmt: skip
IBAN_SPECS = {"DE": (18, "n"), "GB": (18, "GB"), "FR": (23, "n"), "NL": (14, "NL"),
              "ES": (20, "n"), "IT": (23, "1"), "BE": (12, "n"), "CH": (17, "n")}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    text: str
    spans: tuple[tuple[int, int, str], ...]  # gold: start, end, entity type
    negatives: int = 0  # how many hard negatives the text carries


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def luhn_complete(body: str) -> str:
    """``body`` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def card(r: random.Random, valid: bool = True) -> str:
    prefix, length, groups = r.choice(
        [("4", 16, (4, 4, 4, 4)), ("5" + r.choice("12345"), 16, (4, 4, 4, 4)),
         ("3" + r.choice("47"), 15, (4, 6, 5)), ("6011", 16, (4, 4, 4, 4))]
    )  # fmt: skip
    number = luhn_complete(prefix + _digits(r, length - len(prefix) - 1))
    if not valid:
        number = number[:-1] + str((int(number[-1]) + r.randint(1, 9)) % 10)
    sep = r.choice([" ", "-", "", " "])
    out, pos = [], 0
    for g in groups:
        out.append(number[pos : pos + g])
        pos += g
    return sep.join(out)


def iban(r: random.Random, valid: bool = True) -> str:
    country = r.choice(sorted(IBAN_SPECS))
    n, kind = IBAN_SPECS[country]
    letters = {"n": 0, "1": 1}.get(kind, 4)  # Italy's BBAN starts with one letter (CIN)
    bban = "".join(r.choice(string.ascii_uppercase) for _ in range(letters)) + _digits(
        r, n - letters
    )
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    if not valid:
        check = (check + r.randint(1, 90)) % 97 + 2
    value = f"{country}{check:02d}{bban}"
    if r.random() < 0.6:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def ssn(r: random.Random, valid: bool = True) -> str:
    if valid:
        area = r.choice([r.randint(1, 665), r.randint(667, 899)])
        group, serial = r.randint(1, 99), r.randint(1, 9999)
    else:
        area, group, serial = r.choice(
            [(0, r.randint(1, 99), r.randint(1, 9999)), (666, r.randint(1, 99), 1234),
             (r.randint(900, 999), 12, 3456), (r.randint(1, 665), 0, 4321)]
        )  # fmt: skip
    sep = "-" if r.random() < 0.85 else " "
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def phone(r: random.Random) -> str:
    area, exch, line = r.choice(US_AREAS), r.randint(200, 999), _digits(r, 4)
    return r.choice(
        [f"({area}) {exch}-{line}", f"{area}-{exch}-{line}", f"{area}.{exch}.{line}",
         f"+1 {area} {exch} {line}", f"+1-{area}-{exch}-{line}",
         f"+44 20 {r.choice('378')}{_digits(r, 3)} {_digits(r, 4)}", f"+49 30 {_digits(r, 6)}",
         f"+33 1 {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}",
         f"+91 9{_digits(r, 4)} {_digits(r, 5)}",
         f"+61 4{_digits(r, 2)} {_digits(r, 3)} {_digits(r, 3)}",
         f"020 {r.choice('378')}{_digits(r, 3)} {_digits(r, 4)}"]  # UK national: no +
    )  # fmt: skip


def email(r: random.Random) -> str:
    first, last = r.choice(FIRST).lower(), r.choice(LAST).lower()
    local = r.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{r.randint(1, 99)}",
                      f"{first}+{r.choice(['news', 'work', 'x'])}", f"{last}_{first}"])  # fmt: skip
    return f"{local}@{r.choice(DOMAINS)}"


def ip(r: random.Random) -> str:
    if r.random() < 0.8:
        return ".".join(str(r.randint(1 if i == 0 else 0, 254)) for i in range(4))
    return (
        "2001:db8:"
        + ":".join(f"{r.randint(0, 65535):x}" for _ in range(3))
        + "::"
        + f"{r.randint(1, 9999):x}"
    )


def person(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def secret(r: random.Random, password: bool = False) -> str:
    alnum = string.ascii_letters + string.digits

    def rnd(n: int, alphabet: str = alnum) -> str:
        return "".join(r.choice(alphabet) for _ in range(n))

    kind = 8 if password else r.randrange(8)
    if kind == 0:
        return "sk-proj-" + rnd(20) + "1" + rnd(27)
    if kind == 1:
        return "sk-ant-api03-" + rnd(40) + "7"
    if kind == 2:
        return "AKIA" + rnd(16, string.ascii_uppercase + string.digits)
    if kind == 3:
        return "ghp_" + rnd(36)
    if kind == 4:
        return "xoxb-" + _digits(r, 11) + "-" + rnd(24)
    if kind == 5:
        return "sk_live_" + rnd(24)
    if kind == 6:
        return "AIza" + rnd(35, alnum + "_-")
    if kind == 7:
        head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64url(json.dumps({"sub": _digits(r, 8), "name": person(r)}).encode())
        return f"{head}.{body}.{rnd(43, alnum + '_-')}"
    return rnd(6) + "!" + rnd(5, string.digits) + rnd(4)  # a password (in a connection string)


# hard negatives: texts that look like an entity and are not one
def _negatives() -> tuple[Callable[[random.Random], str], ...]:
    return (
        lambda r: f"Order #{_digits(r, 10)}",
        lambda r: f"order number {r.randint(1, 9)}{_digits(r, 9)}",
        lambda r: f"tracking number 1Z{_digits(r, 3)}AA{_digits(r, 10)}",
        lambda r: (
            f"USPS tracking 9400 {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)} "
            f"{_digits(r, 4)} {_digits(r, 2)}"
        ),
        lambda r: f"version {r.randint(1, 20)}.{r.randint(0, 40)}.{r.randint(0, 99)}",
        lambda r: f"build 10.0.{r.randint(19000, 26000)}.{r.randint(1000, 4000)}",
        lambda r: f"on {r.randint(2019, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
        lambda r: f"on {r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2019, 2026)}",
        lambda r: (
            f"from {r.randint(8, 11)}:{r.choice(['00', '15', '30', '45'])} "
            f"to {r.randint(12, 18)}:00"
        ),
        lambda r: f"card-like {card(r, valid=False)}",
        lambda r: f"account {iban(r, valid=False)}",
        lambda r: f"reference {ssn(r, valid=False)}",
        lambda r: f"invoice INV-{r.randint(2019, 2026)}-{_digits(r, 6)}",
        lambda r: f"ISBN 978-{r.randint(0, 9)}-{_digits(r, 2)}-{_digits(r, 6)}-{r.randint(0, 9)}",
        lambda r: f"timestamp {r.randint(1600000000, 1800000000)}{_digits(r, 3)}",
        lambda r: f"zip {_digits(r, 5)}-{_digits(r, 4)}",
        lambda r: f"price ${r.randint(1, 9)},{_digits(r, 3)}.{_digits(r, 2)}",
        lambda r: f"SKU {_digits(r, 3)}-{_digits(r, 3)}-{_digits(r, 3)}",
    )


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL_ADDRESS": email,
    "PHONE_NUMBER": phone,
    "CREDIT_CARD": card,
    "IBAN_CODE": iban,
    "US_SSN": ssn,
    "IP_ADDRESS": ip,
    "PERSON": person,
    "SECRET": secret,
}

# {E:TYPE} is an entity slot, {N} a hard-negative slot
TEMPLATES = (
    "Hi, please update my contact to {E:EMAIL_ADDRESS} before Friday.",
    "You can reach me at {E:PHONE_NUMBER} after 5pm.",
    "My name is {E:PERSON} and my email is {E:EMAIL_ADDRESS}.",
    "Charge the card {E:CREDIT_CARD} for the annual plan.",
    "The refund should go to {E:IBAN_CODE}, thanks.",
    "Customer SSN {E:US_SSN} needs to be verified by {E:PERSON}.",
    "Login failed from {E:IP_ADDRESS} three times today.",
    "Here is my key {E:SECRET}, why does the API return 401?",
    "Ping {E:PERSON} at {E:PHONE_NUMBER} or {E:EMAIL_ADDRESS}.",
    "{E:PERSON} asked about {N} and said it was urgent.",
    "I paid with {E:CREDIT_CARD} but {N} never arrived.",
    "Can you summarise this ticket: {N}, customer {E:EMAIL_ADDRESS}.",
    "Wire it to {E:IBAN_CODE} (holder {E:PERSON}).",
    "The server at {E:IP_ADDRESS} runs {N}.",
    "export DATABASE_URL=postgres://app:{E:SECRET}@db.internal:5432/prod",
    "Our on-call number is {E:PHONE_NUMBER}; escalate {N}.",
    "Please forget the SSN {E:US_SSN} I sent earlier.",
    "Why is {N} shown twice on my statement?",
    "Reschedule the call {N} with {E:PERSON}.",
    "What does {N} mean on the shipping label?",
    "Compare {N} and {N} for me.",
    "My colleague {E:PERSON} will send the contract.",
    "Translate to French: my phone is {E:PHONE_NUMBER} and my card is {E:CREDIT_CARD}.",
    "Debug this config: api_key: {E:SECRET} region: eu-west-1",
    "Is {E:IP_ADDRESS} a private address? It came with {N}.",
    "Write a polite reply to {E:EMAIL_ADDRESS} about {N}.",
)


def _fill(template: str, r: random.Random) -> Sample:
    negatives = _negatives()
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    n_neg, pos, length = 0, 0, 0
    while True:
        start = template.find("{", pos)
        if start == -1:
            out.append(template[pos:])
            break
        end = template.index("}", start)
        out.append(template[pos:start])
        length = sum(len(p) for p in out)
        slot = template[start + 1 : end]
        if slot == "N":
            value = r.choice(negatives)(r)
            n_neg += 1
        else:
            entity = slot[2:]
            if entity == "SECRET" and "://" in template:
                value = secret(r, password=True)  # the password of a connection string
            else:
                value = GENERATORS[entity](r)
            spans.append((length, length + len(value), entity))
        out.append(value)
        pos = end + 1
    return Sample("".join(out), tuple(spans), n_neg)


def generate(n: int = 600, seed: int = 15) -> list[Sample]:
    r = random.Random(seed)
    return [_fill(TEMPLATES[i % len(TEMPLATES)], r) for i in range(n)]
