"""Related accounts: accounts that trade for one interest (Art.44(2) "related accounts").

A relations file (TOML or JSON) lists groups of accounts and why they are related:

    [[relation]]
    kind = "group"              # same corporate group
    name = "华能集团"
    accounts = ["EMIT0001", "EMIT0002"]

    [[relation]]
    kind = "beneficial_owner"   # same natural person or entity behind them
    name = "张三"
    accounts = ["NOISE0007", "NOISE0123"]

An account may be in several relations; two accounts are related when one relation holds both.
"""
from __future__ import annotations


from ccerx.engine.formats.config import load_table

KINDS = ("group", "beneficial_owner")


class RelatedAccounts:
    __slots__ = ("relations", "_of")

    def __init__(self, relations=()):
        self.relations: list[tuple[str, str, tuple]] = []   # (kind, name, accounts)
        self._of: dict[str, list[int]] = {}
        for kind, name, accounts in relations:
            index = len(self.relations)
            self.relations.append((kind, name, tuple(accounts)))
            for account in accounts:
                self._of.setdefault(account, []).append(index)

    def related(self, a: str, b: str):
        """(kind, name) of the first relation holding both accounts, or None. O(relations of a)."""
        of_b = self._of.get(b)
        if not of_b:
            return None
        for index in self._of.get(a, ()):
            if index in of_b:
                kind, name, _ = self.relations[index]
                return kind, name
        return None

    def __len__(self) -> int:
        return len(self.relations)


def parse_relations(data, where: str = "relations") -> RelatedAccounts:
    rows = data.get("relation", data.get("relations")) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a 'relation' array of tables")
    out = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: relation {number} must be a table")
        unknown = sorted(set(row) - {"kind", "name", "accounts"})
        if unknown:
            raise ValueError(f"{where}: relation {number} has an unknown key {unknown[0]!r}")
        kind, name, accounts = row.get("kind"), row.get("name", ""), row.get("accounts")
        if kind not in KINDS:
            raise ValueError(f"{where}: relation {number}: kind must be one of "
                             f"{', '.join(KINDS)}, not {kind!r}")
        if not isinstance(name, str):
            raise ValueError(f"{where}: relation {number}: name must be text")
        if (not isinstance(accounts, list) or len(accounts) < 2
                or not all(isinstance(a, str) and a for a in accounts)):
            raise ValueError(f"{where}: relation {number}: accounts must list at least two "
                             f"account ids")
        out.append((kind, name, accounts))
    return RelatedAccounts(out)


def load_relations(path) -> RelatedAccounts:
    """Read a relations file (.toml, else JSON); None gives no relations. Raises ValueError."""
    if path is None:
        return RelatedAccounts()
    data = load_table(path)
    return parse_relations(data, str(path))
