"""Guardrails (issue 15): the detectors the request path's guardrail stage
(``farebox.gateway.guardrails``) runs on a request's texts, and on its answer.

- ``normalise``: Unicode NFKC, zero-width and homoglyph folding, base64 and leetspeak decoding
  of suspicious spans (layer 1's input);
- ``injection_rules``: layer 1, phrase families of prompt injection and jailbreaks;
- ``classifier``: layer 2, a local model (``farebox[guard-model]``) run off the event loop;
- ``secrets``: provider and cloud API keys, private keys, JWTs, passwords in URLs (no extra);
- ``pii_patterns``: the built-in PII recognisers (checksummed where the entity has one);
  ``pii_presidio``: presidio's (``farebox[pii]``), names and places included;
- ``placeholders``: typed placeholders (``<EMAIL_1>``), restored in answers and streams;
- ``abuse``: prompt stuffing, batch bursts, context exploitation.

A capability wing: it may import notify, config, stores (role protocols), http, errors and
core, never gateway, api, app or cli. Extras are imported lazily, with an error naming them.
"""
