"""coi remote: the store, certificate pinning, trust by token or certificate, the endpoint
a config names, and the commands, with the fake Incus standing in for the server."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.commands.cli import build_parser, main
from coi.config import remotes
from coi.config.endpoint import endpoint
from coi.config.load import flags_layer_from
from coi.config.model import Incus as IncusSection
from coi.core.errors import CoiError, UsageError
from coi.remote import trust
from tests.fakes import FakeIncus

URL = "https://203.0.113.5:8443"


def _pem(folder: Path, name: str) -> str:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_text()


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pems")
    return _pem(folder, "server"), _pem(folder, "other")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    where = remotes.folder()
    where.mkdir(parents=True)
    (where / "client.crt").write_text("client cert\n")  # client_pair finds them: no openssl
    (where / "client.key").write_text("client key\n")
    yield where


def token_for(pem: str, secret: str = "s3cret") -> str:
    data = {
        "client_name": "alice",
        "fingerprint": remotes.fingerprint(pem),
        "addresses": ["203.0.113.5:8443"],
        "secret": secret,
        "expires_at": "0001-01-01T00:00:00Z",
    }
    return base64.b64encode(json.dumps(data).encode()).decode()


@dataclass
class Server(FakeIncus):
    """A remote whose trust store takes one token."""

    trusted: bool = False
    token: str = ""

    def server(self) -> dict[str, Any]:
        info = super().server()
        info["auth"] = "trusted" if self.trusted else "untrusted"
        info["environment"]["server_name"] = "m2"
        return info

    def redeem_token(self, token: str, name: str) -> None:
        self.trust_tokens = {self.token}
        super().redeem_token(token, name)
        self.trusted = True


def connector(server: Server) -> trust.Connector:
    def connect(url: str, cert: Path, key: Path, pinned: Path, project: str) -> Server:
        assert pinned.exists()  # the certificate is pinned before any request
        return server

    return connect


# -- pinning (pure) -------------------------------------------------------------------


def test_a_token_pins_the_certificate_it_names(pems: tuple[str, str]) -> None:
    server, other = pems
    assert trust.pin(server, token=token_for(server), cert_file=None, accept=False)
    with pytest.raises(CoiError, match="not the one the token names"):
        trust.pin(other, token=token_for(server), cert_file=None, accept=False)


def test_without_token_or_file_the_user_must_accept_the_fingerprint(
    pems: tuple[str, str],
) -> None:
    server, _ = pems
    with pytest.raises(UsageError, match=remotes.fingerprint(server)):
        trust.pin(server, token=None, cert_file=None, accept=False)
    assert trust.pin(server, token=None, cert_file=None, accept=True) == remotes.fingerprint(server)


def test_a_certificate_file_must_match(pems: tuple[str, str], tmp_path: Path) -> None:
    server, other = pems
    (tmp_path / "s.crt").write_text(server)
    assert trust.pin(server, token=None, cert_file=tmp_path / "s.crt", accept=False)
    with pytest.raises(CoiError, match="refusing"):
        trust.pin(other, token=None, cert_file=tmp_path / "s.crt", accept=False)


def test_garbage_is_not_a_token() -> None:
    for junk in ("not base64!", base64.b64encode(b"[1, 2]").decode(), ""):
        with pytest.raises(UsageError, match="trust token"):
            remotes.decode_token(junk)


# -- trust and the store --------------------------------------------------------------


def test_add_by_token_trusts_pins_and_saves(home: Path, pems: tuple[str, str]) -> None:
    pem, _ = pems
    server = Server(token=token_for(pem))
    added = trust.add(
        "team", URL, token=server.token, fetch=lambda url: pem, connect=connector(server)
    )
    assert (added.how, added.server) == ("token", "m2")
    assert ("POST", "certificates") in server.calls and server.trusted_names == ["team"]
    assert remotes.get("team").url == URL
    assert (home / "team.crt").read_text() == pem
    assert [p.name for p in home.iterdir() if p.name.startswith(".")] == []  # no pending pin


def test_add_by_certificate_needs_the_admin_to_trust_it_first(
    home: Path, pems: tuple[str, str]
) -> None:
    pem, _ = pems
    server = Server()
    with pytest.raises(CoiError, match="add-certificate"):
        trust.add("team", URL, accept=True, fetch=lambda url: pem, connect=connector(server))
    assert remotes.remotes() == []
    server.trusted = True
    added = trust.add("team", URL, accept=True, fetch=lambda url: pem, connect=connector(server))
    assert added.how == "certificate"
    assert server.calls == []  # no trust request when already trusted


def test_a_token_for_another_server_saves_nothing(home: Path, pems: tuple[str, str]) -> None:
    pem, other = pems
    server = Server(token=token_for(other))
    with pytest.raises(CoiError, match="not the one the token names"):
        trust.add("team", URL, token=server.token, fetch=lambda u: pem, connect=connector(server))
    assert remotes.remotes() == [] and server.calls == []


def test_list_switch_remove(home: Path, pems: tuple[str, str]) -> None:
    pem, _ = pems
    remotes.save(remotes.Remote("a", URL, "default", home / "a.crt"), pem)
    remotes.save(remotes.Remote("b", "https://198.51.100.7:8443", "team", home / "b.crt"), pem)
    with pytest.raises(UsageError, match="exists"):
        remotes.save(remotes.Remote("a", URL, "default", home / "a.crt"), pem)
    assert remotes.current() == "local"
    remotes.switch("b")
    assert remotes.current() == "b"
    with pytest.raises(UsageError, match="no remote named 'c'"):
        remotes.switch("c")
    remotes.remove("b")
    assert remotes.current() == "local"  # removing the current one goes back to local
    assert [r.name for r in remotes.remotes()] == ["a"]
    assert not (home / "b.crt").exists()


def test_client_pair_is_made_once_with_a_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cert, key = remotes.client_pair()
    assert "BEGIN CERTIFICATE" in cert.read_text()
    assert key.stat().st_mode & 0o077 == 0
    assert remotes.client_pair() == (cert, key)


@given(st.from_regex(remotes.NAME, fullmatch=True))
def test_every_valid_name_but_local_is_taken(name: str) -> None:
    if name == "local":
        with pytest.raises(UsageError):
            remotes.check_name(name)
    else:
        assert remotes.check_name(name) == name


@pytest.mark.parametrize(
    "url", ["http://h:8443", "https://", "https://h:99999", "https://h/x", "h:8443"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        remotes.check_url(url)


def test_urls_get_the_default_port() -> None:
    assert remotes.normal_url("https://h") == "https://h:8443"
    assert remotes.normal_url("https://[::1]:9000/") == "https://[::1]:9000"


# -- the endpoint a config names ------------------------------------------------------


def section(remote: str | None, project: str = "default") -> IncusSection:
    return IncusSection(project, "incus-admin", 1000, remote, None, None, None, "coi", "coibr0")


def test_endpoint_of_a_name_uses_the_pinned_certificate(home: Path, pems: tuple[str, str]) -> None:
    remotes.save(remotes.Remote("team", URL, "agents", home / "team.crt"), pems[0])
    where, project = endpoint(section("team"))
    assert (where.url, where.server_cert, project) == (URL, str(home / "team.crt"), "agents")
    assert where.client_cert == str(home / "client.crt")
    assert endpoint(section("team", project="mine"))[1] == "mine"
    with pytest.raises(UsageError, match="no remote named"):
        endpoint(section("nope"))


def test_endpoint_follows_switch_and_a_url_stays_as_it_was(
    home: Path, pems: tuple[str, str]
) -> None:
    assert endpoint(section(None))[0].is_local
    remotes.save(remotes.Remote("team", URL, "default", home / "team.crt"), pems[0])
    remotes.switch("team")
    assert endpoint(section(None))[0].url == URL
    assert endpoint(section("local"))[0].is_local
    assert endpoint(section("https://192.0.2.1:8443"))[0].url == "https://192.0.2.1:8443"


# -- the command line -----------------------------------------------------------------


def test_remote_flag_sets_the_incus_remote_key() -> None:
    args = build_parser().parse_args(["run", "--remote", "team", "true"])
    assert args.remote == "team"
    assert flags_layer_from({"remote": "team"}).data == {"incus": {"remote": "team"}}
    with pytest.raises(CoiError):
        flags_layer_from({"remote": "no spaces allowed"})


def test_remote_commands(home: Path, pems: tuple[str, str], capsys: Any) -> None:
    remotes.save(remotes.Remote("team", URL, "default", home / "team.crt"), pems[0])
    assert main(["remote", "switch", "team"]) == 0
    assert main(["remote", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["current"]) for r in listed] == [("local", False), ("team", True)]
    assert main(["remote", "remove", "team"]) == 0
    assert main(["remote", "remove", "team"]) == 2
    assert "no remote named 'team'" in capsys.readouterr().err
    assert main(["remote", "add", "x", "ftp://h"]) == 2
