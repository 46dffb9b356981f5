"""closeguard's reference service: a Starlette app with JSON logs, metrics and an explorer page.

It runs from a checkout (``python -m app``) or from the container; it is not part of the
``closeguard`` wheel, which ships only the library.
"""
