"""Surveillance: one pass over the event stream, every enabled detector, numbered alerts."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

from ccerx.engine.surveillance.config import SurveillanceConfig
from ccerx.engine.surveillance.market import MarketView
from ccerx.engine.surveillance.model import Alert, Disclosure
from ccerx.engine.surveillance.pre_disclosure import PreDisclosureDetector
from ccerx.engine.surveillance.ramping import RampingDetector
from ccerx.engine.surveillance.relations import RelatedAccounts
from ccerx.engine.surveillance.spoofing import SpoofingDetector
from ccerx.engine.surveillance.value_transfer import ValueTransferDetector
from ccerx.engine.surveillance.wash import WashDetector

DETECTORS = (("pre_disclosure", PreDisclosureDetector), ("wash", WashDetector),
             ("ramping", RampingDetector), ("spoofing", SpoofingDetector),
             ("value_transfer", ValueTransferDetector))


class Surveillance:
    """feed(event) -> the alerts it completes; finish() -> the rest. Deterministic: alert ids
    are `<rule>-<trigger seq>` (with `-<n>` from the second alert of one rule at one event)."""

    def __init__(self, config: Optional[SurveillanceConfig] = None,
                 related: Optional[RelatedAccounts] = None, specs=None):
        self.config = config or SurveillanceConfig()
        self.related = related or RelatedAccounts()
        self.view = MarketView({s.symbol: s for s in specs} if isinstance(specs, (list, tuple))
                               else (specs or {}))
        self.detectors = [cls(getattr(self.config, name), self.related)
                          for name, cls in DETECTORS if getattr(self.config, name).enabled]
        self.handlers: dict[type, list] = {}
        for detector in self.detectors:
            for kind, handler in detector.handlers.items():
                self.handlers.setdefault(kind, []).append(handler)
        self.last_seq = 0
        self._numbered: dict[tuple, int] = {}
        self.finished = False

    def feed(self, event) -> list[Alert]:
        if type(event) is not Disclosure:
            self.last_seq = event.seq
        found = []
        view = self.view
        for handler in self.handlers.get(type(event), ()):
            found.extend(handler(event, view))
        view.apply(event)
        return [self._number(alert) for alert in found] if found else found

    def feed_all(self, events: Iterable) -> list[Alert]:
        alerts = []
        for event in events:
            alerts.extend(self.feed(event))
        return alerts

    def finish(self) -> list[Alert]:
        """The alerts still pending at the end of the stream (once)."""
        if self.finished:
            return []
        self.finished = True
        alerts = []
        for detector in self.detectors:
            finish = getattr(detector, "finish", None)
            if finish is not None:
                alerts.extend(self._number(a) for a in finish(self.view))
        return alerts

    def _number(self, alert: Alert) -> Alert:
        key = (alert.rule, alert.trigger_seq)
        n = self._numbered.get(key, 0) + 1
        self._numbered[key] = n
        alert_id = f"{alert.rule}-{alert.trigger_seq}" + (f"-{n}" if n > 1 else "")
        return dataclasses.replace(alert, alert_id=alert_id)


def surveil(events: Iterable, config: Optional[SurveillanceConfig] = None,
            related: Optional[RelatedAccounts] = None, specs=None) -> list[Alert]:
    """Every alert of a whole stream, in the order they were raised."""
    monitor = Surveillance(config, related, specs)
    alerts = monitor.feed_all(events)
    return alerts + monitor.finish()
