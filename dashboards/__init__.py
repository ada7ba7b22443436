"""Streamlit what-if dashboard over the public ctxsim API; ``ctxsim dashboard`` serves it.

Pages live in ``dashboards/views``, and each is thin. A page reads its inputs (``inputs``), calls
ctxsim through the cached wrappers in ``api``, and renders with ``charts`` and ``export``.
"""
