"""PII redaction: per-entity recall on a generated corpus with known values, no raw value in any file of
RAGTUNE_HOME or the command's output after `ingest --redact-pii`, and Presidio kept offline and quiet."""

import json
import random
import string
import subprocess
import sys

import pytest

pytest.importorskip("presidio_analyzer", reason="needs the pii extra")

from conftest import cli_env, run_cli  # noqa: E402
from ragtune.ingest.pii import PiiRedactor, placeholder  # noqa: E402


def luhn_complete(prefix: str, length: int, rng) -> str:
    """A card number starting with `prefix` whose last digit makes the Luhn checksum valid."""
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    """An IBAN with valid mod-97 check digits."""
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def group4(s: str, sep: str = " ") -> str:
    return sep.join(s[i:i + 4] for i in range(0, len(s), 4))


def digits(rng, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def letters(rng, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


NINO_LETTERS = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
NINO_PREFIXES = [a + b for a in NINO_LETTERS for b in NINO_LETTERS
                 if b != "O" and a + b not in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ")]  # never issued


def make_values(rng, n=40) -> dict[str, list[str]]:
    """n values per entity, in the formats people write them."""
    first = ["jane", "omar", "li", "maria", "tom", "aiko", "pedro", "fatima", "lars", "nina"]
    last = ["doe", "haddad", "wei", "rossi", "becker", "sato", "silva", "khan", "berg", "novak"]
    domains = ["example.org", "mail.co.uk", "acme-corp.com", "posteo.de", "uni.edu"]
    out: dict[str, list[str]] = {k: [] for k in TEMPLATES}
    for i in range(n):
        name = f"{rng.choice(first)}.{rng.choice(last)}{rng.randint(1, 999)}"
        out["EMAIL_ADDRESS"].append(f"{name}@{rng.choice(domains)}")
        area = rng.choice([212, 415, 617, 312, 206, 303, 404, 512, 646, 718])
        ex, line = rng.randint(200, 989), rng.randint(0, 9999)
        out["PHONE_NUMBER"].append([f"({area}) {ex}-{line:04d}", f"{area}-{ex}-{line:04d}",
                                    f"+1 {area} {ex} {line:04d}", f"+44 20 {rng.randint(7000, 8999)} {line:04d}",
                                    f"+49 30 {rng.randint(2000000, 8999999)}"][i % 5])
        card = [luhn_complete("4", 16, rng), luhn_complete(str(rng.randint(51, 55)), 16, rng),
                luhn_complete(rng.choice(["34", "37"]), 15, rng), luhn_complete("6011", 16, rng)][i % 4]
        out["CREDIT_CARD"].append([card, group4(card), group4(card, "-")][i % 3])
        account = [iban("DE", digits(rng, 18)), iban("GB", letters(rng, 4) + digits(rng, 14)),
                   iban("NL", letters(rng, 4) + digits(rng, 10))][i % 3]
        out["IBAN_CODE"].append(account if i % 2 else group4(account))
        ssn_area = rng.choice([a for a in range(1, 900) if a != 666])
        out["US_SSN"].append(f"{ssn_area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}")
        if i % 2:
            out["IP_ADDRESS"].append(f"{rng.choice([23, 45, 81, 151, 203])}.{rng.randint(0, 255)}."
                                     f"{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        else:
            out["IP_ADDRESS"].append("2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6)))
        nino, suffix = digits(rng, 6), rng.choice("ABCD")
        prefix = rng.choice(NINO_PREFIXES)
        out["UK_NINO"].append(f"{prefix}{nino}{suffix}" if i % 2 else
                              f"{prefix} {nino[:2]} {nino[2:4]} {nino[4:]} {suffix}")
    return out


TEMPLATES = {
    "EMAIL_ADDRESS": "For account questions write to {} and we answer within a day.",
    "PHONE_NUMBER": "The customer asked us to call back on {} after five pm.",
    "CREDIT_CARD": "The refund went to the card {} on file.",
    "IBAN_CODE": "Payouts are sent to the account {} every Friday.",
    "US_SSN": "The applicant's social security number is {} per the form.",
    "IP_ADDRESS": "The login came from {} during the night.",
    "UK_NINO": "Their national insurance number {} was verified.",
}


@pytest.fixture(scope="module")
def redactor():
    return PiiRedactor()


@pytest.fixture(scope="module")
def values():
    return make_values(random.Random(7), 40)


def test_per_entity_recall(redactor, values):
    recall = {}
    for entity, items in values.items():
        found = 0
        for value in items:
            out, counts = redactor.redact(TEMPLATES[entity].format(value))
            if value not in out and placeholder(entity) in out:
                found += 1
        recall[entity] = found / len(items)
    print("\nrecall per entity:", json.dumps(recall))
    assert all(r >= 0.95 for r in recall.values()), recall


def test_ordinary_support_text_is_left_alone(redactor):
    text = ("The refund window is 30 days. Order 1234567 shipped with version 2.4.1 of the app; "
            "see https://docs.example.com/returns or call support. Error code 0x80070005 means access denied.")
    assert redactor.redact(text)[0] == text


def test_no_raw_value_reaches_the_store_or_the_output(tmp_path, values):
    kb = tmp_path / "kb"
    kb.mkdir()
    raw = [v for items in values.values() for v in items]
    for entity, items in values.items():
        lines = [f"# {entity.title()} notes", ""] + [TEMPLATES[entity].format(v) for v in items]
        (kb / f"{entity.lower()}.md").write_text("\n\n".join(lines) + "\n")
    import shutil

    from conftest import EXAMPLES

    for doc in sorted((EXAMPLES / "helpcenter" / "v1").glob("*.md"))[:6]:  # ordinary facts to train on
        shutil.copy(doc, kb / doc.name)
    home = tmp_path / "home"
    home.mkdir()
    proc = run_cli(home, "ingest", str(kb), "--redact-pii", "--json")
    report = json.loads(proc.stdout)
    assert report["added"] == len(values) + 6 and report["failed"] == []
    again = json.loads(run_cli(home, "sync", "--json").stdout)  # the bot remembers the setting
    assert again["unchanged"] == len(values) + 6 and again["updated"] == 0
    # training data is built from the stored (redacted) chunks: export it and check it too
    export = home / "training-export.jsonl"
    run_cli(home, "finetune", "--dry-run", "--export", str(export), "--json")
    assert export.is_file() and export.stat().st_size > 0
    leaked = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked += [(path.name, v) for v in raw if v.encode() in data]
    leaked += [("stdout/stderr", v) for v in raw if v in proc.stdout + proc.stderr]
    assert leaked == []
    hits = json.loads(run_cli(home, "search", "refund card on file", "--mode", "bm25", "--json").stdout)["hits"]
    assert hits and "<CREDIT_CARD>" in hits[0]["text"]


def test_presidio_stays_offline_and_quiet(tmp_path):
    """No socket is opened and nothing is printed or cached while the redactor is built and used."""
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from ragtune.ingest.pii import PiiRedactor\n"
        "r = PiiRedactor()\n"
        "out, counts = r.redact('write to jane.doe@example.org or ann@mail.co.uk')\n"
        "assert counts['EMAIL_ADDRESS'] == 2, (out, counts)\n"
    )
    env = cli_env(tmp_path, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert not (tmp_path / "cache").exists() and not (tmp_path / ".cache").exists()
