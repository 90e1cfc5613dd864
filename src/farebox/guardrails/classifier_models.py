"""The local models of prompt injection's layer 2 (``farebox[guard-model]``), all blocking, all
CPU, all offline: nothing is downloaded.

- ``NanoGuardModel``: the 16.8M-parameter model the PyPI package ``metatronnanoguard`` bundles
  (module ``nanoguard``), with its own BPE tokenizer (512 tokens at most, a BOS token first).
  The package's own ``scan`` pads every text to 512 tokens and lets attention see the padding
  (as the model was trained): 170 ms of CPU for any text. Here a text of at most ``min_tokens``
  (64) tokens is padded to 64 the same way (short questions score as with 512: no more false
  positives, measured on fow-cache's questions and bastioncorpus), and a longer one is scored
  at its own length with a key-padding attention mask, so that a batch mixes lengths freely.
  Either way a text's score never depends on what it was batched with.
- ``LocalCheckpoint``: an operator's own model in a directory: ``model.onnx`` (onnxruntime),
  ``model.pt2`` (``torch.export``) or ``model.pt`` (TorchScript), with ``tokenizer.json`` (the
  ``tokenizers`` format, as Hugging Face checkpoints ship it) and optionally ``config.json``
  (``id2label``: the label named ``SAFE``/``BENIGN`` is the harmless one, index 0 otherwise;
  ``max_position_embeddings``: the window, 512 by default). The model takes ``input_ids`` and
  ``attention_mask`` (and ``token_type_ids``, zeros, when an ONNX model asks for it) and
  returns logits; the score is one minus the harmless label's probability (a single logit:
  its sigmoid).

A text longer than a model's window is scored on its head and on its tail, and keeps the higher
score: an instruction hidden at the end of a long document is not cut away.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from farebox.errors import GuardrailUnavailable

EXTRA = "pip install torch==2.13.0 'farebox[guard-model]'"
log = logging.getLogger("farebox.guardrails")
SAFE_LABELS = frozenset({"SAFE", "BENIGN", "LEGIT", "LEGITIMATE", "NEGATIVE", "NORMAL"})
# a token is rarely longer than this many characters: a huge text is cut to its first and last
# ``window * CHARS_PER_TOKEN`` characters before it is tokenized at all
CHARS_PER_TOKEN = 16


def import_extra(name: str, what: str = "prompt injection's classifier") -> ModuleType:
    """``name``, or ``GuardrailUnavailable`` naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise GuardrailUnavailable(
            f"{what} needs the Python module {name!r}, which is not installed: "
            f"{EXTRA} (farebox[guard-model])"
        ) from exc


def clip(text: str, window: int) -> str:
    """A huge text cut to the characters its head and tail windows can reach."""
    span = window * CHARS_PER_TOKEN
    return text if len(text) <= 2 * span else text[:span] + " " + text[-span:]


def windows(ids: Sequence[int], size: int) -> list[list[int]]:
    """The head window of ``ids``, and the tail window too when they do not fit in one."""
    if len(ids) <= size:
        return [list(ids)]
    return [list(ids[:size]), list(ids[-size:])]


def _masked_forward(torch: Any, ng: Any, inner: Any, ids: Any, mask: Any) -> Any:
    """nanoguard's ``Classifier.forward`` with attention restricted to the real tokens."""
    F = torch.nn.functional
    T = ids.size(1)
    cos, sin = inner.cos[:, :T], inner.sin[:, :T]
    keep = mask.bool()
    attend = keep[:, None, None, :]  # (B, 1, 1, T): every head and query sees the real keys
    x = ng.norm(inner.transformer.wte(ids))
    x0 = x
    for i, block in enumerate(inner.transformer.h):
        x = inner.resid_lambdas[i] * x + inner.x0_lambdas[i] * x0
        a, h = block.attn, ng.norm(x)
        B, _, _ = h.size()
        q = a.c_q(h).view(B, T, a.n_head, a.head_dim)
        k = a.c_k(h).view(B, T, a.n_kv_head, a.head_dim)
        v = a.c_v(h).view(B, T, a.n_kv_head, a.head_dim)
        q = ng.norm(ng.apply_rotary_emb(q, cos, sin)).transpose(1, 2)
        k = ng.norm(ng.apply_rotary_emb(k, cos, sin)).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=attend)
        x = x + a.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))
        x = x + block.mlp(ng.norm(x))
    x = ng.norm(x)
    weights = keep.unsqueeze(-1).to(x.dtype)
    pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return inner.cls_head(inner.cls_norm(pooled).float())


def masked_module(torch: Any, ng: Any, inner: Any) -> Any:
    """An ``nn.Module`` around nanoguard's classifier: ``(input_ids, attention_mask) ->
    logits``, padding masked (what ``NanoGuardModel`` runs, and what can be exported)."""

    class MaskedNanoGuard(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return _masked_forward(torch, ng, self.inner, input_ids, attention_mask)

    return MaskedNanoGuard().eval()


def _batches(items: list[list[int]], max_batch: int) -> list[list[int]]:
    """Indexes of ``items`` grouped by length (sorted), ``max_batch`` at most per group, so
    that a batch pads little."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    return [order[i : i + max_batch] for i in range(0, len(order), max_batch)]


class _Windowed:
    """Scores texts window by window, in length-sorted batches; a text's score is its
    windows' highest. Subclasses give ``encode`` (a text's windows, special tokens included)
    and ``run`` (one padded batch -> probabilities of injection)."""

    max_batch = 16

    def encode(self, text: str) -> list[list[int]]:
        raise NotImplementedError

    def run(self, ids: list[list[int]]) -> list[float]:
        raise NotImplementedError

    def scores(self, texts: list[str]) -> list[float]:
        owners: list[int] = []
        items: list[list[int]] = []
        for n, text in enumerate(texts):
            for window in self.encode(text):
                owners.append(n)
                items.append(window)
        found = [0.0] * len(items)
        for group in _batches(items, self.max_batch):
            for i, score in zip(group, self.run([items[i] for i in group]), strict=True):
                found[i] = score
        best = [0.0] * len(texts)
        for owner, score in zip(owners, found, strict=True):
            best[owner] = max(best[owner], score)
        return best


def padded(ids: list[list[int]], pad: int) -> tuple[list[list[int]], list[list[int]]]:
    """Rows padded to the longest, and their attention masks."""
    width = max(len(row) for row in ids)
    rows = [row + [pad] * (width - len(row)) for row in ids]
    masks = [[1] * len(row) + [0] * (width - len(row)) for row in ids]
    return rows, masks


class NanoGuardModel(_Windowed):
    """``metatronnanoguard``'s model on the CPU, ``threads`` intra-op threads for torch
    (a process-wide setting: 1 by default, one CPU per runner thread); texts of at most
    ``min_tokens`` tokens padded to that many, as the model saw them in training."""

    def __init__(
        self, *, threads: int = 1, max_batch: int = 16, min_tokens: int = 64, int8: bool = False
    ) -> None:
        self.min_tokens = min_tokens
        torch: Any = import_extra("torch")
        import_extra("nanoguard")
        ng: Any = import_extra("nanoguard.model")
        tokenizer: Any = import_extra("nanoguard.tokenizer")
        torch.set_num_threads(threads)
        self._torch = torch
        self.max_batch = max_batch
        self._tokenizer = tokenizer.Tokenizer.from_bundled()
        ref = resources.files("nanoguard.assets").joinpath("model.pt")
        with resources.as_file(ref) as path:
            inner, _, config = ng.Classifier.from_checkpoint(str(path), device="cpu")
        self.window = int(config.sequence_len)
        self.int8 = int8 and _quantizable(torch)
        if int8 and not self.int8:
            log.warning("guard_model.int8: this torch has no dynamic quantization; float32 used")
        if self.int8:
            inner = _int8(torch, inner)
        self.module = masked_module(torch, ng, inner)

    def encode(self, text: str) -> list[list[int]]:
        tok = self._tokenizer
        body = tok.enc.encode_ordinary(clip(text, self.window))
        return [[tok.bos_token_id, *w] for w in windows(body, self.window - 1)]

    def run(self, ids: list[list[int]]) -> list[float]:
        short = [i for i, row in enumerate(ids) if len(row) <= self.min_tokens]
        long = [i for i, row in enumerate(ids) if len(row) > self.min_tokens]
        out = [0.0] * len(ids)
        for group, floor, forward in (
            (short, self.min_tokens, self.module.inner),  # padding seen, as in training
            (long, 0, self.module),  # padding masked
        ):
            found = self._forward([ids[i] for i in group], floor, forward) if group else []
            for i, p in zip(group, found, strict=True):
                out[i] = p
        return out

    def _forward(self, ids: list[list[int]], floor: int, forward: Any) -> list[float]:
        torch = self._torch
        pad = int(self._tokenizer.pad_token_id)
        rows, masks = padded([*ids, [pad] * floor], pad)  # the floor row widens the batch
        with torch.inference_mode():
            logits = forward(torch.tensor(rows[:-1]), torch.tensor(masks[:-1], dtype=torch.bool))
            probs = torch.softmax(logits.float(), dim=-1)[:, 1]
        return [float(p) for p in probs.tolist()]


def _quantizable(torch: Any) -> bool:
    """Whether torch still has dynamic int8 quantization (deprecated, not yet removed)."""
    return hasattr(getattr(getattr(torch, "ao", None), "quantization", None), "quantize_dynamic")


def _int8(torch: Any, inner: Any) -> Any:
    """The model with its linear layers' weights in int8 (dynamic quantization: activations
    quantized per call). Measured against float32 at threshold 0.5: about 3 times less CPU;
    the same flags on fow-cache's 1,106 questions (0.45%) and bastioncorpus' benign texts;
    2 of 200 in-the-wild jailbreaks and 3 of 118 bastioncorpus attacks fewer."""
    with warnings.catch_warnings():  # torch.ao.quantization says it is deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(inner, {torch.nn.Linear}, dtype=torch.qint8)


def _label_config(directory: Path) -> tuple[int, int, int]:
    """From ``config.json``, when there is one: the harmless label's index, the window and
    the padding id (0, 512 and 0 without one)."""
    path = directory / "config.json"
    if not path.is_file():
        return 0, 512, 0
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GuardrailUnavailable(f"{path}: not a readable JSON file ({exc})") from exc
    labels = config.get("id2label") or {}
    safe = [int(i) for i, name in labels.items() if str(name).upper() in SAFE_LABELS]
    window = int(config.get("max_position_embeddings") or 512)
    pad = config.get("pad_token_id")
    return (safe[0] if safe else 0), min(window, 4096), int(pad) if pad is not None else 0


def _injection(logits: Sequence[Sequence[float]], safe: int) -> list[float]:
    """One minus the harmless label's softmax probability (one logit: its sigmoid)."""
    out = []
    for row in logits:
        values = [float(v) for v in row]
        if len(values) == 1:
            out.append(1.0 / (1.0 + math.exp(-values[0])))
            continue
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        out.append(1.0 - exps[safe] / sum(exps))
    return out


class LocalCheckpoint(_Windowed):
    """An operator's own classifier in ``directory`` (see the module's docstring): ONNX on
    onnxruntime (one intra-op thread per session) or TorchScript."""

    def __init__(self, directory: str, *, threads: int = 1, max_batch: int = 16) -> None:
        self.max_batch = max_batch
        root = Path(directory)
        if not root.is_dir():
            raise GuardrailUnavailable(f"guard_model.path {directory!r} is not a directory")
        tokenizers: Any = import_extra("tokenizers")
        if not (root / "tokenizer.json").is_file():
            raise GuardrailUnavailable(f"guard_model.path {directory!r} has no tokenizer.json")
        self._safe, self.window, self._pad = _label_config(root)
        tok = tokenizers.Tokenizer.from_file(str(root / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self._prefix, self._suffix = self._specials(tok)
        if (root / "model.onnx").is_file():
            self._run = self._onnx(root / "model.onnx", threads)
        elif (root / "model.pt2").is_file() or (root / "model.pt").is_file():
            self._run = self._torch(root, threads)
        else:
            raise GuardrailUnavailable(
                f"guard_model.path {directory!r} has no model.onnx, model.pt2 or model.pt"
            )

    @staticmethod
    def _specials(tok: Any) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer's template puts before and after a text."""
        bare = tok.encode("a", add_special_tokens=False).ids
        full = tok.encode("a", add_special_tokens=True).ids
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return full[:start], full[start + len(bare) :]
        return [], []

    def encode(self, text: str) -> list[list[int]]:
        body = self._tok.encode(clip(text, self.window), add_special_tokens=False).ids
        size = max(1, self.window - len(self._prefix) - len(self._suffix))
        return [[*self._prefix, *w, *self._suffix] for w in windows(body, size)]

    def run(self, ids: list[list[int]]) -> list[float]:
        rows, masks = padded(ids, self._pad)
        return _injection(self._run(rows, masks), self._safe)

    def _onnx(self, path: Path, threads: int) -> Any:
        ort: Any = import_extra("onnxruntime", "a local ONNX guard model")
        np: Any = import_extra("numpy", "a local ONNX guard model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]

        def run(rows: list[list[int]], masks: list[list[int]]) -> Any:
            ids = np.asarray(rows, dtype=np.int64)
            feed = {
                "input_ids": ids,
                "attention_mask": np.asarray(masks, dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
            return session.run(None, {n: feed[n] for n in names if n in feed})[0].tolist()

        return run

    def _torch(self, root: Path, threads: int) -> Any:
        """``model.pt2`` (``torch.export``), else ``model.pt`` (TorchScript, which torch
        deprecates: its warning is silenced, the operator chose the format)."""
        torch: Any = import_extra("torch", "a local torch guard model")
        torch.set_num_threads(threads)
        if (root / "model.pt2").is_file():
            module = torch.export.load(str(root / "model.pt2")).module()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(root / "model.pt"), map_location="cpu").eval()

        def run(rows: list[list[int]], masks: list[list[int]]) -> Any:
            with torch.inference_mode():
                out = module(torch.tensor(rows), torch.tensor(masks))
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, dict):
                out = out.get("logits", next(iter(out.values())))
            return out.float().tolist()

        return run
