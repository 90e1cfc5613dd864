"""``guard_model:``, the top-level settings of prompt injection's layer 2 (the local classifier
of ``farebox[guard-model]``): which model, where its threads run and how many texts may wait.
A plan turns the classifier on (``guardrails.prompt_injection.classifier: on``) and sets its
``threshold``, ``timeout_ms`` and ``on_timeout``; this section is shared by every plan::

    guard_model:
      model: nanoguard          # the metatronnanoguard package's 16.8M-parameter model
      # model: local            # or an operator's own checkpoint directory:
      # path: /srv/models/prompt-guard   # model.onnx or model.pt (TorchScript), tokenizer.json
      threads: 1                # worker threads, each running the model on one CPU thread
      queue: 64                 # texts that may wait; past that a request is a timeout at once
      max_batch: 16             # texts scored together in one model call
      cache: 4096               # scores remembered by the text's digest (0: none)
      int8: false               # nanoguard with int8 weights: ~3x less CPU, scores move a little
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from farebox.config.base import Strict


class GuardModelSettings(Strict):
    model: Literal["nanoguard", "local"] = "nanoguard"
    path: str | None = None  # ``model: local``: a directory with the checkpoint
    threads: int = Field(1, ge=1, le=64)
    queue: int = Field(64, ge=1, le=100_000)
    max_batch: int = Field(16, ge=1, le=1024)
    cache: int = Field(4096, ge=0, le=10_000_000)
    int8: bool = False  # nanoguard only: dynamic int8 quantization of its linear layers

    @model_validator(mode="after")
    def _path_for_local(self) -> GuardModelSettings:
        if self.model == "local" and not self.path:
            raise ValueError("guard_model: model: local needs a path (a checkpoint directory)")
        if self.model == "nanoguard" and self.path:
            raise ValueError("guard_model: path is for model: local (nanoguard ships its own)")
        return self
