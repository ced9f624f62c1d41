"""asv over two real commits of this repository, `torchsuite compare` beside `asv compare`, and
the published site working offline in a real browser. Slow: two asv runs (about a minute)."""
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from suite.report.compare import compare

REPO = Path(__file__).resolve().parents[1]
SLOWDOWN = "        time.sleep(0.003)  # the regression under test\n"

pytestmark = pytest.mark.slow


def git(cwd, *args):
    done = subprocess.run(["git", "-C", str(cwd), "-c", "user.name=test", "-c", "user.email=test@example.com",
                           *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory):
    """A clone of this repository with one more commit that slows every train step by 3 ms,
    benchmarked at both commits by scripts/asv_commits.py."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("asv-commits")
    clone = root / "clone"
    git(root, "clone", "--quiet", str(REPO), str(clone))
    steps = clone / "suite" / "timing" / "steps.py"
    text = steps.read_text()
    slowed = text.replace("        optimizer.step()\n\n    return train_step",
                          "        optimizer.step()\n" + SLOWDOWN + "\n    return train_step")
    assert slowed != text, "the train step changed shape: update this test's slowdown"
    slowed = slowed.replace("from __future__ import annotations\n", "from __future__ import annotations\n\nimport time\n", 1)
    steps.write_text(slowed)
    git(clone, "commit", "--quiet", "-am", "Slow every train step down by 3 ms")
    out = root / "out"
    done = subprocess.run([sys.executable, str(clone / "scripts" / "asv_commits.py"), "HEAD~1", "HEAD",
                           "--out", str(out), "--bench", r"Models\.time_iteration"],
                          cwd=clone, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = dict(re.findall(r"^results (\w+): (.+)$", done.stdout, re.M))
    base, new = (Path(files[git(clone, "rev-parse", ref)[:12]]) for ref in ("HEAD~1", "HEAD"))
    return {"stdout": done.stdout, "base": base, "new": new, "html": out / "html"}


def asv_ratios(stdout: str) -> dict[tuple, float]:
    """(model, mode, variant) -> ratio, from asv compare's tables."""
    ratios = {}
    for line in stdout.splitlines():
        match = re.search(r"\|\s*~?([0-9.]+)\s*\|\s*models\.Models\.time_iteration\('(\w+)', '(\w+)', '([\w-]+)'\)",
                          line)
        if match:
            ratios[match.group(2, 3, 4)] = float(match.group(1))
    return ratios


def test_torchsuite_compare_and_asv_compare_agree_on_every_change(two_commits):
    header, rows = compare(two_commits["base"], two_commits["new"], threshold=0.05)
    from_asv = asv_ratios(two_commits["stdout"])
    assert from_asv, two_commits["stdout"][-2000:]
    shared = 0
    for row in rows:
        ratio = from_asv.get((row.key["model"], row.key["mode"], row.key["setup"]))
        if ratio is None or abs(ratio - 1) <= 0.05 or abs(row.ratio - 1) <= 0.05:
            continue
        shared += 1
        assert (ratio > 1) == (row.ratio > 1), (row.figure, ratio, row.ratio)
    assert shared, "no change beyond the threshold that both tools measured"
    # 3 ms is more than the threshold of a step under 30 ms (LeNet, the speech net), not of MNIST's
    slowed = [r for r in rows if r.key["mode"] == "train" and r.key["setup"] == "cpu" and r.baseline_median_s < 0.03]
    assert slowed and all(r.ratio > 1.05 for r in slowed), [(r.figure, r.ratio) for r in slowed]
    assert any(r.verdict == "regressed" for r in slowed), [(r.figure, r.verdict, r.why) for r in slowed]
    assert "Benchmarks that have got worse" in two_commits["stdout"]


def test_the_published_site_renders_offline_in_chromium(two_commits, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium)")
    html = two_commits["html"]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "asv_offline.py"), str(html),
                           "--cache", str(tmp_path / "npm")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "https://" not in re.sub(r'<a [^>]*>', "", (html / "index.html").read_text())
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        # No host but this one resolves: whatever the page needs must come from the site itself.
        page = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={tmp_path / 'profile'}",
                               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                               "--virtual-time-budget=8000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120).stdout
    finally:
        server.shutdown()
    assert "continental origin of swallow" not in page  # asv's page for a failed library load
    assert 'id="models.Models.time_iteration"' in page or "models.Models.time_iteration" in page
    assert "benchmark-plot" in page  # the grid of graphs was drawn
