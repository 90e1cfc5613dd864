"""A streamed answer, assembled for the response cache: the OpenAI ``chat.completion`` the
relayed ``chat.completion.chunk`` objects add up to (content, reasoning, tool calls, logprobs
and finish reason of each choice), with the usage the stream reported.

It copies what it needs out of each chunk as it sees it (the renderers may change a chunk
afterwards), and gives nothing back unless every choice finished: a stream cut short is
never cached."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]
IDENTITY = ("id", "created", "model", "system_fingerprint")  # a completion's, from its chunks


class _Choice:
    __slots__ = ("content", "finish", "logprobs", "reasoning", "refusal", "role", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, JSON] = {}  # tool call index -> id, type, name, argument parts
        self.logprobs: list[Any] | None = None
        self.finish: str | None = None

    def see(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        for field, parts in (("content", self.content), ("refusal", self.refusal)):
            text = delta.get(field)
            if isinstance(text, str):
                parts.append(text)
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str):
            self.reasoning.append(reasoning)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool(call)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(logprobs["content"])
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])

    def _tool(self, call: Mapping[str, Any]) -> None:
        index = call.get("index")
        index = index if isinstance(index, int) else len(self.tools)
        tool = self.tools.setdefault(index, {"id": None, "type": "function", "name": "",
                                             "arguments": []})  # fmt: skip
        if call.get("id"):
            tool["id"] = call["id"]
        function = call.get("function") or {}
        if isinstance(function.get("name"), str) and function["name"]:
            tool["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            tool["arguments"].append(function["arguments"])

    def message(self) -> JSON:
        text = "".join(self.content)
        message: JSON = {"role": self.role, "content": text if text or not self.tools else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tools:
            message["tool_calls"] = [
                {"id": t["id"] or f"call_{i}", "type": t["type"],
                 "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                for i, t in sorted(self.tools.items())
            ]  # fmt: skip
        return message


class StreamCapture:
    """Sees every chunk of a relayed stream; ``completion`` is what they add up to."""

    __slots__ = ("_choices", "_identity")

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._identity: JSON | None = None

    def see(self, chunk: Mapping[str, Any]) -> None:
        if self._identity is None:
            self._identity = {k: chunk[k] for k in IDENTITY if k in chunk}
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index")
                index = index if isinstance(index, int) else 0
                found = self._choices.get(index)
                if found is None:
                    found = self._choices[index] = _Choice()
                found.see(choice)

    def completion(self, usage: Mapping[str, Any] | None) -> JSON | None:
        """The ``chat.completion``; None unless the stream had choices that all finished."""
        choices = self._choices
        if not choices or any(c.finish is None for c in choices.values()):
            return None
        out: JSON = {"id": "", **(self._identity or {}), "object": "chat.completion"}
        out["choices"] = [
            {"index": i, "message": c.message(), "logprobs": _logprobs(c),
             "finish_reason": c.finish}
            for i, c in sorted(choices.items())
        ]  # fmt: skip
        if isinstance(usage, Mapping):
            out["usage"] = {k: v for k, v in usage.items() if k != "farebox_cost_usd"}
        return out


def _logprobs(choice: _Choice) -> JSON | None:
    return None if choice.logprobs is None else {"content": choice.logprobs}
