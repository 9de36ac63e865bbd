"""Market surveillance (rules Art.44): the event stream in, alerts out.

Theory of operation. `Surveillance.feed(event)` takes the exchange's events one at a time, in
sequence (engine events from engine/core/events.py, plus `Disclosure`, the operator's
price-sensitive announcement, see model.py) and returns the alerts that event completes;
`finish()` returns those still pending at the end of the stream (a day's order-to-trade count
with no close in the stream). Each detector sees an event *before* the shared `MarketView`
(last trade, reference prices, the live book rebuilt from the events) applies it, so "the
last trade" and "the touch" always mean the market as it was when the event arrived.

There is no I/O and no clock in here: time is the events' own `ts`, so the same events and
the same configuration give the same alerts, byte for byte (alert ids are the rule and the
sequence number of the event that completed the alert). Reading files, the case store
(cases.py) and the command line (`ccerx surveil`) sit around it.

    config.py            the detectors' parameters, their defaults, and the TOML they load from
    relations.py         related accounts (same group, same beneficial owner)
    model.py             Alert, Disclosure
    market.py            MarketView: what every detector needs to know about the market
    pre_disclosure.py    Art.44(1)  one-sided trading before a price-sensitive disclosure
    wash.py              Art.44(2)  opposite trades between the same or related accounts
    ramping.py           Art.44(3)  large, dense or far-from-the-market orders
    spoofing.py          Art.44(4)  orders placed to be cancelled
    value_transfer.py    Art.44(5)  buy-high-sell-low between accounts
    monitor.py           Surveillance: feeds the view and the detectors, numbers the alerts
    stream.py            NDJSON event lines (`ccerx replay --events-out`) back to events
    cases.py             the alerts store and the cases on them (SQLite, 0600)
"""
