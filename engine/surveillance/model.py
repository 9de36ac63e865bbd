"""What surveillance reads besides engine events (`Disclosure`) and what it writes (`Alert`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

# Rule names, one per Art.44 item, in the order of the article.
PRE_DISCLOSURE = "pre_disclosure"      # Art.44(1)
WASH = "wash"                          # Art.44(2)
RAMPING = "ramping"                    # Art.44(3)
SPOOFING = "spoofing"                  # Art.44(4)
VALUE_TRANSFER = "value_transfer"      # Art.44(5)
RULES = (PRE_DISCLOSURE, WASH, RAMPING, SPOOFING, VALUE_TRANSFER)
ARTICLES = {PRE_DISCLOSURE: "44(1)", WASH: "44(2)", RAMPING: "44(3)", SPOOFING: "44(4)",
            VALUE_TRANSFER: "44(5)"}

# What a disclosure means for the price, as the operator declares it.
NEGATIVE, POSITIVE, UNKNOWN = "negative", "positive", "unknown"
DIRECTIONS = (NEGATIVE, POSITIVE, UNKNOWN)


class Disclosure(NamedTuple):
    """A price-sensitive announcement about one credit type, made public at `ts`: an issuance
    batch announced by the registry, a methodology change, a project's verification
    withdrawn. The engine has no such command yet, so disclosures reach surveillance two ways:
    a credits deposit of at least `pre_disclosure.issuance_min_t` tonnes at one time (an
    issuance batch moved in from the registry: more supply, `negative`), and explicit lines
    `{"type":"disclosure","ts":...,"instrument":...,"direction":"negative|positive|unknown",
    "id":"...","note":"..."}` in an events file or a `--disclosures` file. `seq` is the
    engine sequence number of the event it is (a deposit) or follows (an explicit line)."""
    seq: int
    ts: int
    instrument: str
    direction: str = UNKNOWN
    disclosure_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class Alert:
    """One suspicion, with its evidence.

    `rule` is the Art.44 item (RULES), `kind` the pattern within it; `accounts` the accounts
    involved (sorted, except where order means something: payer before receiver);
    `score` how far past its threshold the pattern went, in per mille (1000 = exactly at the
    threshold, 2500 = two and a half times, capped at MAX_SCORE: ten times); `evidence` the
    sequence numbers of the events that make the case (capped at MAX_EVIDENCE; `evidence_total`
    says how many there were); `trigger_seq` the event that completed it; `details` the measured integers and names."""
    alert_id: str
    rule: str
    kind: str
    instrument: str
    accounts: tuple
    score: int
    ts: int
    trigger_seq: int
    evidence: tuple
    evidence_total: int
    text: str
    details: dict = field(default_factory=dict)

    @property
    def article(self) -> str:
        return ARTICLES[self.rule]

    def to_json(self) -> dict:
        return {"id": self.alert_id, "rule": self.rule, "article": self.article,
                "kind": self.kind, "instrument": self.instrument,
                "accounts": list(self.accounts), "score": self.score, "ts": self.ts,
                "trigger_seq": self.trigger_seq, "evidence": list(self.evidence),
                "evidence_total": self.evidence_total, "text": self.text,
                "details": self.details}


MAX_EVIDENCE = 200
MAX_SCORE = 10_000


def draft(rule: str, kind: str, instrument: str, accounts, score: int, ts: int,
          trigger_seq: int, evidence, text: str, details: Optional[dict] = None) -> Alert:
    """An alert without its id (the monitor numbers it); evidence sorted, deduplicated, capped."""
    seqs = sorted(set(evidence))
    return Alert("", rule, kind, instrument, tuple(accounts), min(int(score), MAX_SCORE), ts,
                 trigger_seq, tuple(seqs[:MAX_EVIDENCE]), len(seqs), text, details or {})


def per_mille(observed: int, threshold: int) -> int:
    """How far `observed` is past `threshold`, in per mille (integers only)."""
    return observed * 1000 // max(threshold, 1)
