"""Upstream providers behind one protocol (``base``): ``mock`` (in-process, deterministic given a
seed; ``mock_choices``), ``openai`` (OpenAI and compatible servers) and ``anthropic``
(Messages, spoken to in OpenAI shapes through the pure ``translate*`` modules, streams
included). An adapter, independent of sinks and stores: it may import http, catalog, errors
and core, nothing above them.
"""
