"""Secrets detection (issue 15): each kind found with its exact span, look-alikes not, and
arbitrary text (lone surrogates, very long strings) never raises."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.guardrails import secrets


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


JWT = (
    f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url({'sub': '42'})}"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\n"
    "-----END RSA PRIVATE KEY-----"
)
SA_KEY = (
    "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n"
)
AZURE = "Zm9vYmFyYmF6cXV4" * 5 + "ab=="

# (text before, secret, text after, kind)
CASES = [
    ("my key is ", "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0123456789", " thanks", "openai_api_key"),
    ("old key ", "sk-" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s", ".", "openai_api_key"),
    ("", "sk-ant-api03-Xy9kLmNoPq-RsTuVwXyZ0123456789abcdEFG", " is mine", "anthropic_api_key"),
    ("aws_access_key_id = ", "AKIAIOSFODNN7EXAMPLE", "\n", "aws_access_key"),
    ("temp creds ", "ASIAY34FZKBOKMUTVV7A", "", "aws_access_key"),
    (
        "AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = ",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "\n",
        "aws_secret_key",
    ),
    ("key=", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "&q=1", "gcp_api_key"),
    (
        '{"type": "service_account", "private_key": "',
        SA_KEY,
        '", "client_email": "x"}',
        "gcp_service_account_key",
    ),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=",
        AZURE,
        ";EndpointSuffix=core.windows.net",
        "azure_storage_key",
    ),
    ("token ", "ghp_" + "aB3d" * 9, " ok", "github_token"),
    ("", "gho_" + "Zz9Y" * 9, "", "github_token"),
    ("pat: ", "github_pat_11ABCDEFG0" + "x1Y2" * 18, "", "github_token"),
    ("slack ", "xoxb-1234567890-0987654321-abcdefghijkl", ".", "slack_token"),
    ("stripe ", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "", "stripe_key"),
    ("restricted ", "rk_live_51H8abcDEF123ghiJKL456", "", "stripe_key"),
    ("here:\n", PEM, "\nend", "private_key"),
    ("Authorization: Bearer ", JWT, "", "jwt"),
    (
        "DATABASE_URL=postgres://admin:",
        "S3cr3t!pw",
        "@db.example.com:5432/app",
        "connection_string_password",
    ),
    ("redis://default:", "hunter2xYz9", "@cache:6379/0", "connection_string_password"),
    ("password=", "Xk9#mQ2$vL7p", " and more", "generic_secret"),
    ("api_key: '", "a8F3kL9qZ2mX7vB4", "'", "generic_secret"),
]


@pytest.mark.parametrize(("before", "value", "after", "kind"), CASES)
def test_each_kind_is_found_with_its_exact_span(
    before: str, value: str, after: str, kind: str
) -> None:
    text = before + value + after
    hits = [h for h in secrets.scan(text) if h.category == kind]
    assert len(hits) == 1, secrets.scan(text)
    assert text[hits[0].start : hits[0].end] == value
    assert hits[0].detector == "secrets"


LOOK_ALIKES = [
    "pip install scikit-learn; import sklearn as sk-learn",
    "the branch sk-my-very-long-descriptive-branch-name is merged",
    "sk-ant-short",
    "AKIA12 is too short, AKIAIOSFODNN7EXAMPL is 19",
    "a 40-character token nowhere near a key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AIza is a prefix only: AIzaShort",
    "ghp_short and github_pat_tooShort",
    "xoxb- alone, xoxb-abcdefghijklmnop has no digit",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc is a test key",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq\n-----END CERTIFICATE-----",
    "eyJub3RhIjoiand0In0.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlc2lnbmF0dXJl",  # header without alg
    "eyJhbGciOi.x.y",
    "postgres://user:${DB_PASSWORD}@db:5432/app and mysql://root:****@localhost/x",
    "https://example.com/path?a=b and ftp://host/file",
    "password=changeme and password: aaaaaaaaaaaa and the password is long",
    "set api_key=<your-key-here> in the config",
    "token = abcdefgh",
    "the aws secret fix is commit 3f786850e387550fdab836ed7e6dc881de23001b",  # hex: low entropy
]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_not_secrets(text: str) -> None:
    assert secrets.scan(text) == []


def test_overlapping_kinds_keep_one_hit() -> None:
    text = f"api_key={JWT}"
    hits = secrets.scan(text)
    assert [h.category for h in hits] == ["jwt"]


def test_several_secrets_in_one_text_in_order() -> None:
    text = "a AKIAIOSFODNN7EXAMPLE b ghp_" + "aB3d" * 9 + " c sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    assert [h.category for h in secrets.scan(text)] == [
        "aws_access_key",
        "github_token",
        "stripe_key",
    ]


_TRIGGERS = ["sk-", "sk-ant-", "AKIA", "AIza", "ghp_", "xoxb-", "_live_", "eyJ", "://", ":", "@",
             "=", "password=", "-----BEGIN PRIVATE KEY-----", '"private_key": "', "AccountKey=",
             "\ud800", "\udfff", "\x00", "é", "𝔘"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(), st.sampled_from(_TRIGGERS)), max_size=30).map("".join))
def test_arbitrary_text_never_raises(text: str) -> None:
    for hit in secrets.scan(text):
        assert 0 <= hit.start < hit.end <= len(text)


@pytest.mark.parametrize(
    "chunk",
    ["sk-" + "a1" * 10, "AKIA", "eyJhbGciOiJIUzI1NiJ9.", "a://b:c@", "password=x1Y2", "-" * 5],
)
def test_very_long_text_is_scanned_linearly(chunk: str) -> None:
    text = (chunk + " ") * 20_000 + "-----BEGIN PRIVATE KEY-----" + "A" * 50_000
    hits = secrets.scan(text)
    assert all(0 <= h.start < h.end <= len(text) for h in hits)
