"""Settings from the environment: a wrong value is one line naming the variable and what it takes,
never a traceback through pydantic and never the value itself (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.auth.issuers import builtin_profile, trusted_issuer_profiles
from service.settings import InvalidSettings, Settings, TrustedIssuer, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No NEGLECT_ variable of the machine running the tests leaks into these."""
    for name in list(os.environ):
        if name.startswith("NEGLECT_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _error_of(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as raised:
        load_settings()
    return str(raised.value)


def test_a_bad_number_names_its_variable_and_what_it_takes(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    message = _error_of(clean_environment, NEGLECT_DB_POOL_SIZE="ten")

    assert message.startswith("NEGLECT_DB_POOL_SIZE: ")
    assert "integer" in message
    assert "\n" not in message
    assert "ten" not in message


def test_a_number_out_of_range_says_the_range(clean_environment: pytest.MonkeyPatch) -> None:
    message = _error_of(clean_environment, NEGLECT_JWT_LEEWAY_S="600")

    assert message == "NEGLECT_JWT_LEEWAY_S: Input should be less than or equal to 60"


def test_a_database_url_error_names_both_of_its_variables_and_hides_the_password(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    message = _error_of(clean_environment, DATABASE_URL="mysql://app:hunter2@db/neglect")

    assert message == "DATABASE_URL (or NEGLECT_DATABASE_URL): must be a PostgreSQL URL"


def test_json_that_does_not_parse_names_the_variable(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    message = _error_of(clean_environment, NEGLECT_TRUSTED_ISSUERS="[{issuer: x}")

    assert message.startswith("NEGLECT_TRUSTED_ISSUERS: ")
    assert "JSON" in message


def test_an_unknown_preset_is_named_with_its_place_in_the_list(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    message = _error_of(
        clean_environment,
        NEGLECT_TRUSTED_ISSUERS='[{"issuer": "https://sso.example/realms/a", "preset": "okta"}]',
    )

    assert message.startswith("NEGLECT_TRUSTED_ISSUERS[0].preset: ")
    assert "'entra-id-v1', 'entra-id-v2' or 'keycloak'" in message


def test_an_issuer_over_plain_http_across_the_network_is_refused(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    message = _error_of(
        clean_environment, NEGLECT_TRUSTED_ISSUERS='[{"issuer": "http://sso.example/realms/a"}]'
    )

    assert message.startswith("NEGLECT_TRUSTED_ISSUERS[0].issuer: ")
    assert "https" in message


def test_feed_audiences_are_refused_for_an_issuer_whose_delegated_tokens_are_not_known(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    # Only Entra ID's users' tokens (`scp`, the user in `oid`) are read as delegated tokens.
    message = _error_of(
        clean_environment,
        NEGLECT_TRUSTED_ISSUERS='[{"issuer": "https://sso.example/realms/a", "preset": "keycloak",'
        ' "feed_audiences": ["https://neglect.example.org"]}]',
    )

    assert message.startswith("NEGLECT_TRUSTED_ISSUERS[0]: ")
    assert "entra-id-v1 or entra-id-v2 preset" in message


@pytest.mark.usefixtures("clean_environment")
def test_an_entra_issuers_feed_audiences_and_scope_reach_its_profile() -> None:
    issuer = "https://login.microsoftonline.com/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9/v2.0"
    settings = Settings(
        trusted_issuers=[
            TrustedIssuer(
                issuer=issuer, preset="entra-id-v2", feed_audiences=["https://neglect.example.org"]
            ),
            TrustedIssuer(issuer="https://sts.windows.net/t/", preset="entra-id-v1"),
        ]
    )

    with_feed, without = trusted_issuer_profiles(settings)

    assert with_feed.feed_audiences == {"https://neglect.example.org"}
    assert (with_feed.feed_scope, with_feed.user_claim) == ("user_impersonation", "oid")
    assert without.feed_audiences == frozenset()
    with pytest.raises(ValueError, match="feed_scope"):
        TrustedIssuer(issuer=issuer, preset="entra-id-v2", feed_scope="two words")


@pytest.mark.usefixtures("clean_environment")
def test_one_issuer_configured_twice_is_refused() -> None:
    issuer = "https://login.microsoftonline.com/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9/v2.0"
    with pytest.raises(ValueError, match="configured twice"):
        Settings(
            trusted_issuers=[TrustedIssuer(issuer=issuer, preset="entra-id-v2")],
            external_issuer=issuer,
        )


@pytest.mark.usefixtures("clean_environment")
def test_the_public_url_sets_the_issuer_unless_one_is_given() -> None:
    assert Settings(public_url="https://neglect.example.org/").issuer == (
        "https://neglect.example.org"
    )
    own = Settings(public_url="https://neglect.example.org", issuer="https://issuer.example")
    assert (own.issuer, own.base_url) == ("https://issuer.example", "https://neglect.example.org")
    # As before NEGLECT_PUBLIC_URL existed: the issuer is where clients reach the service.
    assert Settings(issuer="https://neglect.example.org").base_url == "https://neglect.example.org"


@pytest.mark.usefixtures("clean_environment")
def test_the_one_issuer_shorthand_is_a_generic_trusted_issuer() -> None:
    settings = Settings(
        external_issuer="https://idp.council.example",
        external_jwks_url="https://idp.council.example/keys",
    )

    [profile] = trusted_issuer_profiles(settings)

    assert profile.issuer == "https://idp.council.example"
    assert profile.jwks_url == "https://idp.council.example/keys"
    assert profile.client_claims == ("client_id", "sub")
    assert profile.audiences == {settings.audience}
    assert builtin_profile(settings).types == {"at+jwt", "application/at+jwt"}


def _run(*arguments: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Our interpreter with these arguments, and these NEGLECT_ variables alone."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("NEGLECT_")
    }
    return subprocess.run(  # noqa: S603 (our own interpreter and module, no shell)
        [sys.executable, *arguments],
        cwd=PROJECT_ROOT,
        env={**environment, **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_prints_one_line_and_fails_on_a_bad_setting() -> None:
    result = _run(
        "-c", "from service.cli.main import main; main()", "migrate", NEGLECT_WORKERS="many"
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "neglect-service: NEGLECT_WORKERS: Input should be a valid integer, unable to parse "
        "string as an integer"
    ]


def test_the_server_factory_prints_one_line_and_fails_on_a_bad_setting() -> None:
    result = _run(
        "-m", "uvicorn", "api.main:create_app", "--factory", "--port", "0", NEGLECT_LOG_LEVEL="LOUD"
    )

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "neglect-service: NEGLECT_LOG_LEVEL: Input should be 'DEBUG'" in result.stderr
