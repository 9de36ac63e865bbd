"""Ledger adapters: where settlement instructions go (see base.py for the interface)."""
