"""scripts/asv_offline.py: where the npm registry comes from (--registry, the environment, npm's
configuration, else a clear error), and a run against a fake registry on 127.0.0.1."""
import base64
import hashlib
import importlib.util
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("asv_offline", REPO / "scripts" / "asv_offline.py")
asv_offline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(asv_offline)

# Reserved names (RFC 2606): nothing resolves them, so no test can reach a real registry.
OPTION, ENVIRONMENT, NPMRC = "https://option.invalid", "https://environment.invalid", "https://npmrc.invalid"


@pytest.fixture
def no_registry(monkeypatch, tmp_path):
    """No registry variable, and a PATH with an empty folder only: no npm."""
    for name in asv_offline.REGISTRY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def fake_npm(no_registry, monkeypatch, tmp_path):
    """An `npm` on PATH that answers `npm config get registry` as a configured .npmrc would."""
    folder = tmp_path / "npm-bin"
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text(f'#!/bin/sh\n[ "$*" = "config get registry" ] && echo "{NPMRC}/" && exit 0\n'
                   'echo "unexpected: npm $*" >&2; exit 1\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


@pytest.mark.parametrize("variable", asv_offline.REGISTRY_VARIABLES)
def test_the_option_wins_over_the_environment_and_npm(fake_npm, monkeypatch, variable):
    monkeypatch.setenv(variable, ENVIRONMENT)
    assert asv_offline.find_registry(OPTION + "/") == OPTION


@pytest.mark.parametrize("variable", asv_offline.REGISTRY_VARIABLES)
def test_the_environment_wins_over_npm_config(fake_npm, monkeypatch, variable):
    monkeypatch.setenv(variable, ENVIRONMENT + "/")
    assert asv_offline.find_registry(None) == ENVIRONMENT


def test_npm_config_is_read_through_npm_on_path(fake_npm):
    assert asv_offline.find_registry(None) == NPMRC


def test_npm_that_fails_is_a_clear_error(no_registry, monkeypatch, tmp_path):
    folder = tmp_path / "broken-bin"
    folder.mkdir()
    (folder / "npm").write_text("#!/bin/sh\necho 'npm ERR! config is broken' >&2\nexit 1\n")
    (folder / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    with pytest.raises(asv_offline.OfflineError, match="config is broken.*--registry"):
        asv_offline.find_registry(None)


def test_no_registry_anywhere_is_a_one_line_error(no_registry, tmp_path, capsys):
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("<html></html>")
    assert asv_offline.main([str(html), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no npm registry" in err and "--registry" in err, err


def fake_packages() -> dict[str, bytes]:
    """Every tarball the script needs, as a registry would serve it: path -> bytes."""
    files = {}
    members: dict[tuple, list[str]] = {}
    for package, version, member in asv_offline.LIBRARIES.values():
        members.setdefault((package, version), []).append(member)
    for (package, version), wanted in members.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for member in wanted + asv_offline.COMPANIONS.get((package, version), []):
                data = f"/* {package} {member} */".encode()
                info = tarfile.TarInfo(f"package/{member}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        files[f"/{package}/-/{package}-{version}.tgz"] = buffer.getvalue()
        files[f"/{package}/{version}"] = b""  # metadata, filled in once the address is known
    return files


@pytest.fixture
def fake_registry():
    """A registry on 127.0.0.1 that serves every package and records what was asked of it."""
    files, asked = fake_packages(), []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    address = f"http://127.0.0.1:{server.server_address[1]}"
    for path in [p for p in files if not p.endswith(".tgz")]:
        package, version = path.strip("/").split("/")
        tgz = f"/{package}/-/{package}-{version}.tgz"
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(files[tgz]).digest()).decode()
        files[path] = json.dumps({"dist": {"tarball": address + tgz, "integrity": integrity}}).encode()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield address, asked
    server.shutdown()


def test_a_run_fetches_from_the_option_registry_then_needs_none(no_registry, fake_registry, tmp_path):
    address, asked = fake_registry
    html, cache = tmp_path / "html", tmp_path / "cache"
    html.mkdir()
    jquery = next(iter(asv_offline.LIBRARIES))
    (html / "index.html").write_text(f'<script src="{jquery}" integrity="sha384-x"></script>')
    assert asv_offline.main([str(html), "--cache", str(cache), "--registry", address + "/"]) == 0
    assert "/jquery/3.3.1" in asked
    page = (html / "index.html").read_text()
    assert page == '<script src="vendor/jquery@3.3.1/dist/jquery.min.js"></script>'
    assert (html / "vendor/jquery@3.3.1/dist/jquery.min.js").read_text() == "/* jquery dist/jquery.min.js */"
    # A second run takes everything from the cache: no registry is needed, and none is asked.
    asked.clear()
    assert asv_offline.main([str(html), "--cache", str(cache)]) == 0
    assert asked == []
