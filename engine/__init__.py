# compiled core or its .py sources: decided before any engine module loads (native.py)
from ccerx.engine import native as _native

_native.choose()
