"""One account schema for every entry point: the accounts file and the gateway config accept
and refuse the same rows, with the same reason."""
from __future__ import annotations

import json

import pytest

from ccerx.engine.formats.config import account_from_row, load_accounts
from ccerx.gateway.config import ConfigError, GatewayConfig

BAD_ROWS = [
    ({"account": "A1", "cash": 100.1}, "cash must be a decimal string"),
    ({"account": "A1", "cash": 100}, "cash must be a decimal string"),
    ({"account": "A1", "cash": "-1.00"}, "negative cash"),
    ({"account": "A1", "cash": "1.001"}, "cash"),
    ({"account": "A1", "credits": {"CCER-AFF": 1.5}}, "whole tonnes"),
    ({"account": "A1", "credits": {"CCER-AFF": True}}, "whole tonnes"),
    ({"account": "A1", "type": "bank"}, "unknown type"),
    ({"account": "A1", "colour": "red"}, "unknown key"),
    ({"account": ""}, "account id"),
    ({"account": "X" * 65}, "longer than 64"),
]


def _toml_value(value):
    return json.dumps(value) if not isinstance(value, dict) else \
        "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"


@pytest.mark.parametrize("row,why", BAD_ROWS)
def test_accounts_file_and_gateway_config_refuse_the_same_rows(tmp_path, row, why):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"accounts": [row]}))
    with pytest.raises(ValueError, match=why):
        load_accounts(path)
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in row.items())
    text = ('[gateway]\ncomp_id = "CCERX"\n[[broker]]\ncomp_id = "B1"\n'
            f'[[broker.account]]\n{body}\n')
    with pytest.raises(ConfigError, match=why):
        GatewayConfig.from_toml_text(text)


def test_a_good_row_reads_the_same_from_both():
    row = {"account": "排放单位01", "type": "key_emission_unit", "cash": "1234.56",
           "credits": {"CCER-AFF": 10}}
    account = account_from_row(row)
    assert (account.account, account.cash, account.credits) == ("排放单位01", 123456,
                                                                {"CCER-AFF": 10})
    text = ('[gateway]\ncomp_id = "CCERX"\n[[broker]]\ncomp_id = "B1"\n[[broker.account]]\n'
            'account = "排放单位01"\ntype = "key_emission_unit"\ncash = "1234.56"\n'
            'credits = {"CCER-AFF" = 10}\n')
    table = GatewayConfig.from_toml_text(text).build_accounts()
    got = table.get("排放单位01")
    assert (got.cash, got.credits, got.member) == (123456, {"CCER-AFF": 10}, "B1")


def test_member_belongs_to_the_accounts_file_not_the_gateway_config():
    assert account_from_row({"account": "A1", "member": "B9"}).member == "B9"
    text = ('[gateway]\ncomp_id = "CCERX"\n[[broker]]\ncomp_id = "B1"\n[[broker.account]]\n'
            'account = "A1"\nmember = "B9"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        GatewayConfig.from_toml_text(text)
