"""The UI's login over real HTTP: throttled, sessions ended on the server, browser-hardening headers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from enrichhq.api.app import create_app
from enrichhq.ui import auth, security
from tests.conftest import Env
from tests.live import LiveServer

PASSWORD = "right-password"


def _server(env: Env) -> LiveServer:
    conf = type(env.settings).model_validate(
        {**env.settings.model_dump(), "enrichhq_api_key": "k", "enrichhq_ui_password": PASSWORD}
    )
    return LiveServer(conf)


def _login(client: httpx.Client, password: str) -> httpx.Response:
    page = client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return client.post("/login", data={"csrf": found[1], "password": password, "next": "/"})


async def test_failed_logins_are_limited_then_answered_429(env: Env, tmp_path: Path) -> None:
    with _server(env) as server, httpx.Client(base_url=server.url) as client:
        statuses = [_login(client, "wrong").status_code for _ in range(auth.LOGIN_LIMIT)]
        assert statuses == [401] * auth.LOGIN_LIMIT
        refused = _login(client, "wrong")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= auth.LOGIN_WINDOW_S
        assert "Too many login attempts" in refused.text
        # Past the limit even the right password waits: the password is not even looked at.
        assert _login(client, PASSWORD).status_code == 429
        assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


async def test_logout_ends_the_session_on_the_server(env: Env, tmp_path: Path) -> None:
    with _server(env) as server, httpx.Client(base_url=server.url) as client:
        assert _login(client, PASSWORD).status_code == 303
        assert client.get("/", follow_redirects=False).status_code == 200
        stolen = client.cookies["enrichhq_session"]
        page = client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        assert client.post("/logout", data={"csrf": csrf[1]}).status_code == 303
        with httpx.Client(base_url=server.url, cookies={"enrichhq_session": stolen}) as replay:
            again = replay.get("/", follow_redirects=False)
        assert again.status_code == 303
        assert again.headers["location"].startswith("/login")


async def test_a_successful_login_clears_the_count(env: Env, tmp_path: Path) -> None:
    with _server(env) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(auth.LOGIN_LIMIT - 1):
            assert _login(client, "wrong").status_code == 401
        assert _login(client, PASSWORD).status_code == 303
        with httpx.Client(base_url=server.url) as other:
            assert [_login(other, "wrong").status_code for _ in range(auth.LOGIN_LIMIT)] == [401] * 10


async def test_pages_carry_the_hardening_headers(env: Env, tmp_path: Path) -> None:
    with _server(env) as server, httpx.Client(base_url=server.url) as client:
        page = client.get("/login")
    assert page.headers["content-security-policy"] == security.CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "onclick" not in page.text
    assert "Secure" not in page.headers["set-cookie"]  # plain http: a Secure cookie would never return


async def test_cookies_are_secure_over_https(env: Env, tmp_path: Path) -> None:
    conf = type(env.settings).model_validate({**env.settings.model_dump(), "enrichhq_api_key": "k"})
    app = create_app(conf)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://hq.example") as client,
    ):
        page = await client.get("/login")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("enrichhq_session=")
    assert cookie.endswith("; Secure")
    assert cookie.count("Secure") == 1


async def test_one_client_cannot_lock_the_account_but_many_together_are_held_back(env: Env) -> None:
    """Per address: 10 a minute. For the account: 100 a minute from all addresses together."""
    conf = type(env.settings).model_validate({**env.settings.model_dump(), "enrichhq_ui_password": PASSWORD})
    for _ in range(auth.LOGIN_LIMIT):
        assert await auth.log_in(env.dbs, conf, "10.0.0.1", "wrong") is None
    with pytest.raises(auth.TooManyLogins):
        await auth.log_in(env.dbs, conf, "10.0.0.1", "wrong")
    # The guesser is held back; the admin, elsewhere, still logs in.
    assert await auth.log_in(env.dbs, conf, "10.0.0.2", PASSWORD) is not None
    # A hundred addresses guessing together exhaust the account's limit: now everyone waits.
    for n in range(auth.ACCOUNT_LIMIT):
        assert await auth.log_in(env.dbs, conf, f"10.1.{n // 250}.{n % 250}", "wrong") is None
    with pytest.raises(auth.TooManyLogins):
        await auth.log_in(env.dbs, conf, "10.0.0.3", PASSWORD)
