"""Who may come in, over real HTTP, in each mode: local (loopback, no credentials), token (Bearer or the login
page's session cookie, Secure under TLS) and entra (Container Apps' identity headers, trusted in that mode only).
In every mode a Host outside the allow-list gets 421; a remote bind needs --allow-remote and is read-only unless
told otherwise; bad settings are one line and exit code 2."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.core.errors import ConfigError
from sbworker.dashboard import access, serve
from sbworker.dashboard.server import Dashboard
from tests.dashboard.conftest import Stack, Web, running
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "a-long-random-dashboard-token-0123456789"
OPERATOR = "Dashboard.Operator"

Board = Callable[..., Any]


@pytest.fixture
def board(stack: Stack) -> Iterator[Board]:
    """Start another dashboard on the module's stack with given access rules; all are stopped afterwards."""
    started: list[Dashboard] = []

    @contextmanager
    def make(rules: access.Access, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> Iterator[Web]:
        served = serve(stack.settings, host=host, port=0, access=rules, tls=tls)
        started.append(served)
        scheme = "https" if tls else "http"
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        yield Web(f"{scheme}://127.0.0.1:{served.port}", tls=context)

    yield make
    for served in started:
        served.stop()


def rules(**kwargs: Any) -> access.Access:
    options: dict[str, Any] = {"host": "127.0.0.1", "allow_remote": False, "auth": None, "token": None,
                               "extra_hosts": [], "actions": None}
    options.update(kwargs)
    return access.configure(**options)


def status(dts: DurableTaskSchedulerClient, instance_id: str) -> str:
    state = dts.get_orchestration_state(instance_id)
    assert state is not None
    return state.runtime_status.name


def principal(*roles: str) -> str:
    claims = [{"typ": "name", "val": "ada@example.com"}, *({"typ": "roles", "val": r} for r in roles)]
    body = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(body).encode()).decode()


def entra_headers(*roles: str) -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL-NAME": "ada@example.com", "X-MS-CLIENT-PRINCIPAL-ID": "0000-ada",
            "X-MS-CLIENT-PRINCIPAL": principal(*roles)}


def test_local_mode_wrong_host_is_421_and_loopback_names_are_served(web: Web) -> None:
    assert web.get("/instances", headers={"Host": "evil.example"}).status == 421
    port = web.base.rsplit(":", 1)[1]
    assert web.get("/instances", headers={"Host": f"evil.example:{port}"}).status == 421
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert web.get("/instances", headers={"Host": f"{host}:{port}"}).status == 200, host


def test_token_mode_without_credentials_is_401_with_the_login_page(board: Board) -> None:
    with board(rules(token=TOKEN)) as web:
        for path in ("/instances", "/queue", "/instance?id=x", "/nowhere"):
            page = web.get(path)
            assert page.status == 401, path
            assert 'id="login-form"' in page.text and page.headers["WWW-Authenticate"].startswith("Bearer")
            assert "workflow-requests" not in page.text  # a refused visitor learns nothing about the target
        assert web.get("/instances", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status == 401
        assert web.get("/healthz").status == 200  # liveness needs no credentials
        assert web.get("/instances", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200


def test_token_mode_wrong_host_is_421_even_with_the_token(board: Board) -> None:
    with board(rules(token=TOKEN)) as web:
        assert web.get("/instances", headers={"Authorization": f"Bearer {TOKEN}",
                                              "Host": "rebound.example"}).status == 421


def test_bearer_scripts_act_without_a_csrf_token(board: Board, dts: DurableTaskSchedulerClient, run_id: str) -> None:
    victim = running(dts, f"{run_id}-bearer")
    with board(rules(token=TOKEN)) as web:
        refused = web.request("POST", "/instance/suspend", {"id": victim})
        assert refused.status == 401 and status(dts, victim) == "RUNNING"
        page = web.request("POST", "/instance/suspend", {"id": victim}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert page.status == 303
    until(lambda: status(dts, victim) == "SUSPENDED", what="suspended")


def test_login_sets_an_http_only_strict_session_cookie_and_logout_ends_it(board: Board) -> None:
    with board(rules(token=TOKEN)) as web:
        form = web.get("/queue")
        wrong = web.request("POST", "/login", {"token": "guess", "next": "/queue", "csrf_token": form.token()},
                            headers={"Origin": web.base})
        assert wrong.status == 401 and "That is not the token." in wrong.text
        signed = web.request("POST", "/login", {"token": TOKEN, "next": "/queue", "csrf_token": form.token()},
                             headers={"Origin": web.base})
        assert signed.status == 303 and signed.headers["Location"] == "/queue"
        cookie = next(c for c in web.raw_cookies if c.startswith("sbw_session="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain HTTP here
        assert TOKEN not in cookie  # the cookie is a signed session, not the token
        page = web.get("/queue")
        assert page.status == 200 and 'id="logout"' in page.text
        web.post("/logout", {}, token_from="/queue", follow=False)
        assert web.get("/queue").status == 401
        # A forged session is refused; so is one signed with another token.
        web.cookies["sbw_session"] = access.new_session(rules(token="another-token-of-enough-length"))
        assert web.get("/queue").status == 401


def test_login_goes_back_only_to_a_page_of_this_dashboard(board: Board) -> None:
    with board(rules(token=TOKEN)) as web:
        form = web.get("/login")
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "http://[x"):
            page = web.request("POST", "/login", {"token": TOKEN, "next": target, "csrf_token": form.token()},
                               headers={"Origin": web.base})
            assert page.status == 303 and page.headers["Location"] == "/instances", target


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_under_tls_every_cookie_is_secure(board: Board, certificate: tuple[Path, Path]) -> None:
    with board(rules(token=TOKEN), tls=certificate) as web:
        form = web.get("/login")
        assert form.status == 200
        page = web.request("POST", "/login", {"token": TOKEN, "next": "/instances", "csrf_token": form.token()},
                           headers={"Origin": web.base})
        assert page.status == 303
        session = next(c for c in web.raw_cookies if c.startswith("sbw_session="))
        csrf = next(c for c in web.raw_cookies if c.startswith("sbw_csrf="))
        assert "Secure" in session and "Secure" in csrf and "HttpOnly" in session and "SameSite=Strict" in session
        assert web.get("/instances").status == 200


def test_entra_mode_trusts_the_platform_headers_and_needs_the_role_to_act(
        board: Board, dts: DurableTaskSchedulerClient, run_id: str) -> None:
    victim = running(dts, f"{run_id}-entra")
    with board(rules(auth="entra", actions=True)) as web:
        page = web.get("/instances")
        assert page.status == 401 and "Container Apps authentication" in page.text
        reader = web.get("/instances", headers=entra_headers())
        assert reader.status == 200 and "ada@example.com" in reader.text and "read-only" in reader.text
        assert web.get("/instances", headers={**entra_headers(), "Host": "evil.example"}).status == 421
        token = web.cookies["sbw_csrf"]  # a read-only page has no form; the double-submit value is the cookie
        refused = web.request("POST", "/instance/suspend", {"id": victim, "csrf_token": token},
                              headers={**entra_headers(), "Origin": web.base})
        assert refused.status == 403 and f"the &#39;{OPERATOR}&#39; app role" in refused.text
        assert status(dts, victim) == "RUNNING"
        allowed = web.request("POST", "/instance/suspend", {"id": victim, "csrf_token": token},
                              headers={**entra_headers(OPERATOR), "Origin": web.base})
        assert allowed.status == 303
    until(lambda: status(dts, victim) == "SUSPENDED", what="suspended")


def test_identity_headers_are_ignored_outside_entra_mode(board: Board) -> None:
    with board(rules(token=TOKEN)) as web:
        assert web.get("/instances", headers=entra_headers(OPERATOR)).status == 401
    with board(rules()) as web:
        page = web.get("/instances", headers=entra_headers(OPERATOR))
        assert page.status == 200 and "ada@example.com" not in page.text and "local user" in page.text


def test_a_remote_bind_answers_only_allowed_hosts_and_is_read_only_by_default(
        board: Board, dts: DurableTaskSchedulerClient, run_id: str) -> None:
    victim = running(dts, f"{run_id}-remote")
    remote = rules(host="0.0.0.0", allow_remote=True, token=TOKEN, extra_hosts=["ops.example.com"])
    assert not remote.actions
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with board(remote, host="0.0.0.0") as web:
        port = web.base.rsplit(":", 1)[1]
        assert web.get("/instances", headers={**bearer, "Host": f"ops.example.com:{port}"}).status == 200
        assert web.get("/instances", headers={**bearer, "Host": f"dashboard.lan:{port}"}).status == 421
        page = web.request("POST", "/instance/terminate", {"id": victim}, headers=bearer)
        assert page.status == 403 and "read-only" in page.text
        assert "Terminate" not in web.get(f"/instance?id={victim}", headers=bearer).text
    assert status(dts, victim) == "RUNNING"


@pytest.mark.parametrize(("options", "setting"), [
    ({"host": "0.0.0.0"}, "--host"),
    ({"host": "192.0.2.7"}, "--host"),
    ({"host": "0.0.0.0", "allow_remote": True}, "--allow-remote"),
    ({"auth": "token"}, "DASHBOARD_TOKEN"),
    ({"token": "short"}, "DASHBOARD_TOKEN"),
    ({"extra_hosts": ["https://ops.example.com/"]}, "--allowed-host"),
])
def test_bad_access_settings_name_the_setting(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        rules(**options)
    assert f": {setting}: " in str(raised.value) and "\n" not in str(raised.value)


def _dashboard_cli(stack: Stack, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICEBUS_", "DTS_", "DASHBOARD_"))}
    env.update({"SERVICEBUS_CONNECTION_STRING": stack.servicebus_connection,
                "DTS_CONNECTION_STRING": f"Endpoint=http://localhost:{stack.local.dts_port};Authentication=None"})
    if token:
        env["DASHBOARD_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "sbworker", "dashboard", "--port", "0", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_command_refuses_a_remote_bind_without_allow_remote_in_one_line(stack: Stack) -> None:
    result = _dashboard_cli(stack, "--host", "0.0.0.0", token=TOKEN)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: --host: 0.0.0.0 is reachable from other machines: add --allow-remote (with "
        "DASHBOARD_TOKEN or --auth entra), or listen on 127.0.0.1"]
    result = _dashboard_cli(stack, "--host", "0.0.0.0", "--allow-remote")
    assert result.returncode == 2 and "--allow-remote: needs an authentication mode" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
