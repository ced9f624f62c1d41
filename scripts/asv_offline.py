"""Make a site written by `asv publish` work offline: its JavaScript and CSS served from beside it.

    python scripts/asv_offline.py HTML_DIR [--cache DIR] [--registry URL]

asv's index.html loads jQuery, flot, bootstrap and three small plugins from public CDNs; with
no route to them (a lab's offline network) the page shows only asv's error page. This fetches
the same libraries from an npm registry (a package registry, which such networks mirror),
checks each tarball against the registry's sha512 integrity, copies the files the page uses
into HTML_DIR/vendor/, and rewrites the pages to load them from there. The pages' subresource
integrity attributes name the CDN's builds, not these files, so they go; the tarball check
replaces them. Tarballs are cached (default ~/.cache/torchsuite/npm): a second run needs no
network. Run it after every `asv publish`, which rewrites index.html.

The registry is the one npm itself would use, so a lab's mirror needs no setting here:
`--registry URL`, else the environment (npm_config_registry or NPM_CONFIG_REGISTRY), else
`npm config get registry` (the .npmrc files, or npm's own default). With none of them (no
option, no variable, no npm) the script stops with an error, unless every tarball is cached.

Versions are asv 0.6's. stupidtable 1.0.1 is not on npm; its npm package
(stupid-table-plugin) starts at 1.1.3, the same plugin and API, which is used instead. flot's
npm package holds its unminified files, the same code as the CDN's minified ones.
"""
from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Callable

# Where npm reads its registry from the environment (npm takes npm_config_* in either case).
REGISTRY_VARIABLES = ("npm_config_registry", "NPM_CONFIG_REGISTRY")
# CDN address in asv's pages -> (npm package, version, file in the package's tarball)
LIBRARIES = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery", "3.3.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": ("flot", "0.8.3", "jquery.flot.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": ("flot", "0.8.3", "jquery.flot.time.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        ("flot", "0.8.3", "jquery.flot.selection.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        ("flot", "0.8.3", "jquery.flot.categories.js"),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        ("flot-orderbars", "1.0.0", "js/jquery.flot.orderBars.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        ("stupid-table-plugin", "1.1.3", "stupidtable.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": ("blueimp-md5", "2.19.0", "js/md5.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": ("bootstrap", "3.1.1", "dist/js/bootstrap.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": ("bootstrap", "3.1.1", "dist/css/bootstrap.min.css"),
}
# Files a library's own files refer to (bootstrap's CSS loads its icon font from ../fonts/).
COMPANIONS = {("bootstrap", "3.1.1"): [f"dist/fonts/glyphicons-halflings-regular.{ext}"
                                       for ext in ("eot", "svg", "ttf", "woff")]}
_CDN_TAG = re.compile(r"""<(script|link)\b[^>]*?(?:src|href)="(https?://[^"]+)"[^>]*>""")
_SRI = re.compile(r"""\s+(?:integrity|crossorigin|referrerpolicy)="[^"]*\"""")


class OfflineError(Exception):
    pass


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as err:
        raise OfflineError(f"cannot fetch {url}: {err}") from None


def find_registry(option: str | None = None) -> str:
    """The npm registry's address, without a trailing slash: `option` (--registry), else npm's
    environment variable, else `npm config get registry`; OfflineError when there is none."""
    if option:
        return option.rstrip("/")
    for name in REGISTRY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name].rstrip("/")
    npm = shutil.which("npm")
    if npm is None:
        raise OfflineError("no npm registry: pass --registry URL, set npm_config_registry, or install npm "
                           "(its `npm config get registry` is read)")
    try:
        done = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise OfflineError(f"`npm config get registry` failed ({err}); pass --registry URL") from None
    address = done.stdout.strip()
    if done.returncode != 0 or not address.startswith(("http://", "https://")):
        why = done.stderr.strip().splitlines()[-1:] or [repr(address)]
        raise OfflineError(f"`npm config get registry` gave no registry ({why[0]}); pass --registry URL")
    return address.rstrip("/")


def tarball(package: str, version: str, cache: Path, registry: Callable[[], str]) -> bytes:
    """The package's npm tarball, from the cache or the registry, checked against its sha512.
    `registry` gives the registry's address; it is called only when the cache lacks the package."""
    path = cache / f"{package}-{version}.tgz"
    meta_path = cache / f"{package}-{version}.json"
    if not meta_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        meta_path.write_bytes(_get(f"{registry()}/{package}/{version}"))
    dist = json.loads(meta_path.read_text())["dist"]
    if not path.exists():
        path.write_bytes(_get(dist["tarball"]))
    data = path.read_bytes()
    algorithm, _, expected = dist["integrity"].partition("-")
    if algorithm != "sha512" or base64.b64decode(expected) != hashlib.sha512(data).digest():
        path.unlink()
        raise OfflineError(f"{package}@{version}: tarball does not match the registry's {algorithm} integrity")
    return data


def vendor(html_dir: Path, cache: Path, registry: Callable[[], str]) -> dict[str, str]:
    """Copy every library file into html_dir/vendor/; CDN address -> its path relative to html_dir."""
    local = {}
    by_package: dict[tuple, list[tuple[str, str]]] = {}
    for url, (package, version, member) in LIBRARIES.items():
        by_package.setdefault((package, version), []).append((url, member))
    for (package, version), wanted in by_package.items():
        with tarfile.open(fileobj=io.BytesIO(tarball(package, version, cache, registry)), mode="r:gz") as archive:
            members = [m for _, m in wanted] + COMPANIONS.get((package, version), [])
            for member in members:
                extracted = archive.extractfile(f"package/{member}")
                if extracted is None:
                    raise OfflineError(f"{package}@{version} has no {member}")
                relative = f"vendor/{package}@{version}/{member}"
                target = html_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(extracted.read())
            for url, member in wanted:
                local[url] = f"vendor/{package}@{version}/{member}"
    return local


def rewrite(page: str, local: dict[str, str]) -> tuple[str, list[str]]:
    """(the page loading its libraries locally, CDN addresses it uses that are not known)."""
    unknown = []

    def replace(match: re.Match) -> str:
        tag, url = match.group(0), match.group(2)
        if url not in local:
            if match.group(1) == "script" or 'rel="stylesheet"' in tag:
                unknown.append(url)
            return tag
        return _SRI.sub("", tag.replace(url, local[url]))

    return _CDN_TAG.sub(replace, page), unknown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", help="the directory `asv publish` wrote (html_dir in asv.conf.json)")
    parser.add_argument("--cache", default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                               / "torchsuite" / "npm"), help="where npm tarballs are kept")
    parser.add_argument("--registry", metavar="URL",
                        help="the npm registry (default: npm_config_registry, else `npm config get registry`)")
    args = parser.parse_args(argv)
    html_dir = Path(args.html_dir)
    pages = sorted(html_dir.glob("*.html"))
    if not (html_dir / "index.html").exists():
        print(f"asv_offline: {html_dir} has no index.html; run `asv publish` first", file=sys.stderr)
        return 2
    try:
        local = vendor(html_dir, Path(args.cache), functools.cache(lambda: find_registry(args.registry)))
    except OfflineError as err:
        print(f"asv_offline: {err}", file=sys.stderr)
        return 2
    unknown = set()
    for page in pages:
        text, missing = rewrite(page.read_text(encoding="utf-8"), local)
        unknown.update(missing)
        page.write_text(text, encoding="utf-8")
    if unknown:
        print(f"asv_offline: pages still load from the network: {', '.join(sorted(unknown))} "
              "(a newer asv? add them to LIBRARIES)", file=sys.stderr)
        return 2
    print(f"{len(pages)} pages now load {len(local)} library files from {html_dir / 'vendor'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
