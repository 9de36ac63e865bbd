"""Agent-based CCER market simulation: scenario -> trading days -> report.

Layout: scenario.py (TOML with built-in defaults) · calendar.py (simulated trading clock) ·
agents.py (emitters, project owners, market makers, noise traders) · venue.py (how agents
reach the exchange, in process) · fixvenue.py (the same over FIX to `ccerx serve`) ·
settle.py (the one seam every trade goes through, and the reconciliation of balances) ·
run.py (the day loop) · stylized.py (realism checks) · report.py (report.html, trades.csv,
charts).
"""
