"""The all-MiniLM-L6-v2 WordPiece tokenizer, vendored in ``assets/tokenizer.json`` (Apache-2.0,
see ``assets/NOTICE``) and loaded with the ``tokenizers`` package.

The file pads every text to 128 tokens and truncates at 128; padding is turned off here (the
model would otherwise pool over padding unless masked, and runs 128 tokens for a 10-token
question) and truncation is set to 256 tokens, the ``max_seq_length`` sentence-transformers
uses for this model."""

from __future__ import annotations

from importlib import resources
from typing import Any

MAX_TOKENS = 256


def load_tokenizer(tokenizers: Any) -> Any:
    """A ``tokenizers.Tokenizer`` (``tokenizers`` is the imported module, passed in so the
    import stays lazy) with padding off and truncation at ``MAX_TOKENS``."""
    text = resources.files(__package__).joinpath("assets", "tokenizer.json").read_text("utf-8")
    tokenizer = tokenizers.Tokenizer.from_str(text)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer
