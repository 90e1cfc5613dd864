"""Upstream providers: mock (in-process), OpenAI-compatible and Anthropic."""
