"""Test helpers: nanoguard's own model as an operator's local checkpoint directory
(``guard_model: {model: local, path: ...}``): its tiktoken BPE rewritten as a ``tokenizer.json``
of the ``tokenizers`` library, the masked model traced to TorchScript (``model.pt``) or
exported to ONNX (``model.onnx``), and a ``config.json`` naming the labels. Nothing is
downloaded: everything comes from the installed ``metatronnanoguard``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from farebox.guardrails.classifier_models import NanoGuardModel


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (what the ``ByteLevel`` pre-tokenizer maps bytes to)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def tokenizer_json(model: NanoGuardModel) -> str:
    """nanoguard's tokenizer (tiktoken) as a ``tokenizers`` JSON document, BOS first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok: Any = model._tokenizer
    enc = tok.enc
    ranks: dict[bytes, int] = enc._mergeable_ranks
    alphabet = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(alphabet[c] for c in b)

    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        pairs = [
            (token[:i], token[i:], rank)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        merges += sorted(pairs, key=lambda p: (ranks[p[0]], ranks[p[1]]))
    merges.sort(key=lambda p: p[2])
    bpe = models.BPE(
        {text(t): r for t, r in ranks.items()},
        [(text(a), text(b)) for a, b, _ in merges],
        fuse_unk=False,
    )
    out = Tokenizer(bpe)
    out.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(enc._pat_str), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    out.decoder = decoders.ByteLevel()
    out.add_special_tokens(list(enc._special_tokens))
    bos, bos_id = "<|reserved_0|>", int(tok.bos_token_id)
    out.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, bos_id)]
    )
    return str(out.to_str())


def export_checkpoint(model: NanoGuardModel, directory: Path, fmt: str = "pt2") -> Path:
    """``directory`` made an operator's checkpoint of nanoguard's model: ``model.pt2``
    (``torch.export``, ``fmt`` pt2) or ``model.pt`` (TorchScript, traced: ``fmt`` pt), with
    ``tokenizer.json`` and ``config.json``. (ONNX: torch's exporter needs the ``onnx``
    package, which is not installed here.)"""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(tokenizer_json(model))
    config = {
        "id2label": {"0": "SAFE", "1": "INJECTION"},
        "max_position_embeddings": model.window,
        "pad_token_id": int(model._tokenizer.pad_token_id),
    }
    (directory / "config.json").write_text(json.dumps(config))
    ids = torch.tensor([[8188, 10, 11, 12], [8188, 10, 11, 8189]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    if fmt == "pt2":
        batch, length = torch.export.Dim("batch", max=1024), torch.export.Dim("length", max=512)
        dims = ({0: batch, 1: length}, {0: batch, 1: length})
        program = torch.export.export(model.module, (ids, mask), dynamic_shapes=dims)
        torch.export.save(program, str(directory / "model.pt2"))
        return directory
    with warnings.catch_warnings():  # torch.jit.trace is deprecated, and says so
        warnings.simplefilter("ignore")
        torch.jit.trace(model.module, (ids, mask)).save(str(directory / "model.pt"))
    return directory
