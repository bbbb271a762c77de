"""PII redaction before indexing (and so before any training data is made from the index): Microsoft Presidio's
pattern recognisers — checksums where the entity has one (Luhn for cards, IBAN mod-97, …) — run offline with
the no_op NLP engine, and each finding is replaced by a typed placeholder such as <EMAIL_ADDRESS>.

Offline and quiet: the e-mail recogniser validates domains with tldextract, whose default extractor downloads
the public-suffix list (and prints a traceback when it cannot); ours uses the snapshot bundled with tldextract,
with no download and no cache. Presidio's import would also load torch/transformers when they are installed
(for NER engines we do not use); that import is skipped. Needs the `pii` extra."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from ..errors import MissingExtraError
from ..types import LoadedDocument, Section

# Entities redacted by default: contact details, payment data, national ids with a checksum or a strict format.
ENTITIES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "CRYPTO",
    "US_SSN", "US_ITIN", "UK_NINO", "UK_NHS", "CA_SIN", "IN_AADHAAR", "SG_NRIC_FIN", "AU_TFN", "ES_NIF",
    "IT_FISCAL_CODE",
)
# Below this Presidio score a match is ignored: it drops the "very weak" bare-digit patterns (score 0.05-0.1)
# that would redact order numbers and versions, and keeps every validated or medium-strength pattern.
SCORE_THRESHOLD = 0.35
PHONE_REGIONS = ("US", "GB", "CA", "AU", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "IN", "BR")


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float


def placeholder(entity: str) -> str:
    return f"<{entity}>"


class PiiRedactor:
    """Find and replace PII in text. Build once (about two seconds: Presidio imports spaCy) and reuse."""

    def __init__(self, entities: Iterable[str] = ENTITIES, threshold: float = SCORE_THRESHOLD) -> None:
        self.entities = tuple(entities)
        self.threshold = threshold
        self.analyzer = _analyzer(self.entities)

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings, in text order; where two overlap the higher score (then longer) wins."""
        if not text.strip():
            return []
        results = self.analyzer.analyze(text=text, language="en", entities=list(self.entities),
                                        score_threshold=self.threshold)
        phones = [(r.start, r.end) for r in results if r.entity_type == "PHONE_NUMBER"]
        if phones:  # an NHS number is 3-3-4 digits with spaces: one with dashes, brackets or a country code
            results = [r for r in results if not (  # around it is a phone number that passed its checksum
                r.entity_type == "UK_NHS" and any(s < r.end and r.start < e and (
                    any(c in text[r.start:r.end] for c in "-().+") or e - s > r.end - r.start) for s, e in phones))]
        chosen: list[Finding] = []
        for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
            if all(r.end <= c.start or r.start >= c.end for c in chosen):
                chosen.append(Finding(r.entity_type, r.start, r.end, r.score))
        return sorted(chosen, key=lambda f: f.start)

    def redact(self, text: str) -> tuple[str, Counter]:
        """`text` with each finding replaced by its placeholder, and the count per entity."""
        counts: Counter = Counter()
        out, last = [], 0
        for f in self.find(text):
            out.append(text[last:f.start])
            out.append(placeholder(f.entity))
            counts[f.entity] += 1
            last = f.end
        out.append(text[last:])
        return "".join(out), counts

    def redact_document(self, doc: LoadedDocument) -> LoadedDocument:
        """Title, headings and text redacted; metadata["pii"] records that it was done and what was found
        (counts per entity type, never values)."""
        total: Counter = Counter()

        def red(text: str) -> str:
            new, counts = self.redact(text)
            total.update(counts)
            return new

        sections = tuple(Section(tuple(red(h) for h in s.heading), red(s.text)) for s in doc.sections)
        title = red(doc.title)
        metadata = {**doc.metadata, "pii": {"redacted": True, "found": dict(sorted(total.items()))}}
        return dataclasses.replace(doc, title=title, sections=sections, metadata=metadata)


def is_redacted(metadata: dict | None) -> bool:
    """Whether a stored document's metadata says it was redacted (sync re-processes on a change)."""
    return bool(((metadata or {}).get("pii") or {}).get("redacted"))


@functools.lru_cache(maxsize=4)
def _analyzer(entities: tuple[str, ...]):
    presidio = _import_presidio()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]}).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in _recognizers(presidio):
        if set(recognizer.supported_entities) & set(entities):
            registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def _import_presidio():
    """Import Presidio without letting it import torch/transformers (seconds, and nothing we use needs them)."""
    blocked = [name for name in ("torch", "transformers") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import presidio_analyzer.predefined_recognizers as recognizers
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("presidio_analyzer", "spacy", "tldextract", "phonenumbers"):
            raise MissingExtraError("presidio-analyzer", "pii") from exc
        raise
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return recognizers


def _recognizers(pr) -> list:
    import tldextract

    # the bundled public-suffix snapshot: no download, no cache directory, nothing printed
    offline = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(pr.EmailRecognizer):
        def validate_result(self, pattern_text: str):
            return offline(pattern_text).fqdn != ""

    return [
        OfflineEmailRecognizer(),
        pr.PhoneRecognizer(supported_regions=PHONE_REGIONS),
        pr.CreditCardRecognizer(),
        pr.IbanRecognizer(),
        pr.IpRecognizer(),
        pr.CryptoRecognizer(),
        pr.UsSsnRecognizer(),
        pr.UsItinRecognizer(),
        pr.UkNinoRecognizer(),
        pr.NhsRecognizer(),
        pr.CaSinRecognizer(),
        pr.InAadhaarRecognizer(),
        pr.SgFinRecognizer(),
        pr.AuTfnRecognizer(),
        pr.EsNifRecognizer(supported_language="en"),
        pr.ItFiscalCodeRecognizer(supported_language="en"),
    ]
