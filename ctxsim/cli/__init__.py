"""The ``ctxsim`` command line."""
