"""The control socket's lot requests (issue 11), sans-IO: `list` becomes a DefineInstrument of
a listing or is refused with a reason, changing nothing; `retire` becomes a Retire."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.core.commands import DefineInstrument, Retire
from ccerx.gateway.control import Refused, handle_line

LISTING = {"op": "list", "symbol": "AFF-0001-2023", "credit_type": "afforestation",
           "project": "CCER-14-2024-0001", "vintage": 2023, "ref_price": "62.00"}


def _line(**changes) -> bytes:
    request = {**LISTING, **changes}
    return orjson.dumps({k: v for k, v in request.items() if v is not None})


def test_a_listing_is_a_define_instrument_stamped_by_the_server():
    command = handle_line(_line(name="塞罕坝造林碳汇"), lambda: 17)
    assert type(command) is DefineInstrument and command.ts == 17
    spec = command.spec
    assert (spec.kind, spec.project, spec.vintage, spec.credit_type, spec.ref_ticks,
            spec.name) == ("listing", "CCER-14-2024-0001", 2023, "afforestation", 6200,
                           "塞罕坝造林碳汇")


@pytest.mark.parametrize("changes, complaint", [
    ({"ref_price": None}, "missing ['ref_price']"),
    ({"band": "10"}, "unknown ['band']"),
    ({"vintage": "2023"}, "vintage must be a year"),
    ({"project": ""}, "project must be a registry project id"),
    ({"project": "CCER 1"}, "project must be a registry project id"),
    ({"credit_type": "peat"}, "credit_type must be one of"),
    ({"symbol": "造林-1"}, "printable ASCII"),
    ({"symbol": "AFF@1"}, "may not contain '@'"),
    ({"ref_price": "62.001"}, "list: "),
    ({"ts": 5}, "ts is set by the server's clock"),
])
def test_a_bad_listing_is_refused(changes, complaint):
    refused = handle_line(_line(**changes), lambda: 17)
    assert type(refused) is Refused and complaint in refused.error, refused


def test_a_retirement_with_its_purpose_in_chinese():
    command = handle_line(orjson.dumps({
        "op": "retire", "retire_id": "R-1", "account": "EMIT01", "project": "CCER-14-2024-0001",
        "vintage": 2023, "qty": 100, "purpose": "2024年度清缴抵销"}), lambda: 9)
    assert type(command) is Retire and (command.purpose, command.ts) == ("2024年度清缴抵销", 9)
