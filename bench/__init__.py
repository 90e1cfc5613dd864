"""Farebox benchmark harness: ``python -m bench``.

Starts a fast mock OpenAI upstream and the gateway in their own processes, drives them
from a separate load-generator process over raw keep-alive HTTP/1.1 sockets, and compares
the gateway against the performance budget in DESIGN.md section 7.
"""
