"""report.html of a real small grid and a real small search (tests/fake_run.py multiruns): what the page
holds (column order, best row, baseline, links to real files, pictures inlined, nothing fetched from
the network), and the page in a real headless Chromium at 1280 px: no script errors, the varying config
column visible without scrolling, sorting by a column reorders the rows, and a screenshot beside the
report for a person to look at. Chromium comes from Debian's package (.ci/run installs it); without it
the browser test skips and says why."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from conftest import FAKE_RUN, REPORT, missing, run_command, write_npz
from test_search import fake_search_args

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


# The reviewed folder is made once for this module's tests, which run in one worker of the parallel suite
# (session-scoped: a module-scoped fixture is made again when the worker runs another module's test between
# two of these).
pytestmark = pytest.mark.xdist_group("report_page")


@pytest.fixture(scope="session")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-job grid and a 6-trial search, then `cnnsweep report` over both."""
    folder = tmp_path_factory.mktemp("reviewed")
    tiny_data = write_npz(folder / "tiny.npz", n_train=96, n_test=32)

    def run(*args: str, command: list[str]) -> None:
        result = run_command(*args, cwd=folder, command=command)
        assert result.returncode == 0, result.stderr

    run("-m", "model.filters=16,32,64", "seed=0,1", f"dataset.path={tiny_data}", "training.epochs=2",
        "dataset.val_size=32", f"hydra.sweep.dir={folder / 'runs' / 'grid'}", command=FAKE_RUN)
    run(*fake_search_args(tiny_data), "hydra.sweeper.n_trials=6", "training.epochs=2",
        f"hydra.sweeper.storage=sqlite:///{folder / 'optuna.db'}", f"hydra.sweep.dir={folder / 'runs' / 'search'}",
        command=FAKE_RUN)
    run(str(folder / "runs"), "--aggregate-seeds", command=REPORT)
    return folder / "runs"


def test_the_page_leads_with_what_won(reviewed: Path) -> None:
    page = (reviewed / "report.html").read_text()
    board = pd.read_csv(reviewed / "leaderboard.csv")
    headers = re.findall(r"<th>(.*?)</th>", page.split('id="leaderboard"')[1].split("</thead>")[0])
    assert headers == [*board.columns, "files"]
    assert headers[:5] == ["rank", "run", "status", "objective", "vs_baseline"]
    rows = page.split('id="leaderboard"')[1].split("<tbody>")[1].split("</tbody>")[0].split("<tr ")[1:]
    assert len(rows) == len(board) == 12
    assert 'class="completed best"' in rows[0] and board.loc[0, "rank"] == 1
    assert sum("baseline" in row.split(">")[0] for row in rows) == int(board["baseline"].eq(True).sum()) >= 3
    links = re.findall(r'href="([^"]+)"', page)
    assert links and not any(link.startswith(("http:", "https:", "//")) for link in links)  # works offline
    for link in links:
        assert (reviewed / html.unescape(link)).exists(), link
    assert any(link.endswith("history.csv") for link in links) and any(link.endswith("config.yaml") for link in links)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"learning curves", "objective vs config", "parallel coordinates", "objective vs params",
            "quick history"} <= set(images)
    assert "<script" in page and "src=" not in page.split("<script")[1].split(">")[0]  # inline script only


PROBE_HEAD = """<script>window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
var __error = console.error; console.error = function () { window.__errors.push([].join.call(arguments, ' ')); __error.apply(console, arguments); };
</script>"""
PROBE_BODY = """<script>window.addEventListener('load', function () {
  var table = document.getElementById('leaderboard');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function index(name) { return heads.map(function (th) { return th.textContent; }).indexOf(name); }
  function column(name) { return Array.prototype.map.call(table.tBodies[0].rows, function (row) {
    return row.cells[index(name)].getAttribute('data-value'); }); }
  var key = heads[index('model.filters')].getBoundingClientRect();
  var before = column('run');
  heads[index('model.filters')].click();
  var descending = column('model.filters');
  heads[index('model.filters')].click();
  var ascending = column('model.filters');
  var probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({errors: window.__errors, width: window.innerWidth, key_left: key.left,
    key_right: key.right, key_top: key.top, key_bottom: key.bottom, before: before, after: column('run'), descending: descending, ascending: ascending});
  document.body.appendChild(probe);
});</script>"""


PROBE_VIEW = """<script>window.addEventListener('load', function () {
  var table = document.getElementById('leaderboard'), box = document.getElementById('filter');
  var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent; });
  function view() {
    var rows = Array.prototype.filter.call(table.tBodies[0].rows, function (row) { return !row.hidden; });
    return {box: box.value, shown: document.getElementById('shown').textContent, rows: rows.map(function (row) {
      return [row.cells[heads.indexOf('run')].textContent, row.cells[heads.indexOf('objective')].getAttribute('data-value')];
    })};
  }
  var fromAddress = view();
  box.value = 'grid';
  box.dispatchEvent(new Event('input'));
  var probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({fromAddress: fromAddress, typed: view()});
  document.body.appendChild(probe);
});</script>"""


def browser() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None:
        missing("no headless Chromium: .ci/run installs Debian's `chromium` package (apt-get install chromium)")
    return found


def run_browser(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,900", "--enable-logging=stderr", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_page_in_a_real_browser(reviewed: Path) -> None:
    binary = browser()
    page = (reviewed / "report.html").read_text()
    probed = reviewed / "probed.html"  # the page with a probe before and after its own script
    probed.write_text(page.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1))
    result = run_browser(binary, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "report" in line]
    assert probe["errors"] == [] and console == []
    assert probe["width"] == 1280 and 0 <= probe["key_left"] and probe["key_right"] <= 1280  # no scrolling needed
    filters = lambda values: [float(value) for value in values if value]  # noqa: E731  (the search's trials have one)
    assert filters(probe["descending"]) == sorted(filters(probe["descending"]), reverse=True)
    assert filters(probe["ascending"]) == sorted(filters(probe["ascending"]))
    assert probe["after"] != probe["before"] and sorted(probe["after"]) == sorted(probe["before"])

    screenshot = reviewed / "report.png"  # beside the report, for a person to look at
    shot = run_browser(binary, f"--screenshot={screenshot}", (reviewed / "report.html").as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = matplotlib.image.imread(screenshot)[:, :, :3].mean(axis=2)  # brightness, 0 (black) to 1 (white)
    assert pixels.shape == (900, 1280)
    assert 0 <= probe["key_top"] < probe["key_bottom"] <= 900  # the leaderboard's header row is on the first screen
    header = pixels[int(probe["key_top"]):int(probe["key_bottom"]) + 1]
    assert (header < 0.5).sum() > 200  # and drawn there: its column names' text (or a dark band behind them)
    assert pixels.std() > 0.05  # the page is not a blank screen


def test_a_multi_objective_search_gets_its_pareto_front(run_cli, tiny_data: Path, tmp_path: Path) -> None:
    search = run_cli(*fake_search_args(tiny_data, searched=("model.filters",)), "hydra.sweeper.n_trials=6",
                     "training.epochs=1", "hydra.sweeper.metric=[val_accuracy,params]",
                     "hydra.sweeper.direction=[maximize,minimize]", "hydra/sweeper/sampler=nsgaii",
                     "hydra.sweeper.sampler.population_size=4", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'mo.db'}",
                     f"hydra.sweep.dir={tmp_path / 'mo'}", command=FAKE_RUN)
    assert search.returncode == 0, search.stderr
    report = run_cli(str(tmp_path / "mo"), command=REPORT)
    assert report.returncode == 0, report.stderr
    front = tmp_path / "mo" / "quick_pareto.png"
    assert front.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and front.stat().st_size > 10_000
    assert 'alt="quick pareto"' in (tmp_path / "mo" / "report.html").read_text()


def test_the_page_address_keeps_a_view_and_the_box_filters(reviewed: Path) -> None:
    """`report.html#sort=objective&ascending&filter=search` opens sorted and filtered; typing filters again."""
    binary = browser()
    board = pd.read_csv(reviewed / "leaderboard.csv")
    board["name"] = board["run"].str.split("/").str[-2:].str.join("/")  # as the page names runs: search/3
    searches, grids = (board[board["name"].str.startswith(f"{kind}/")] for kind in ("search", "grid"))
    probed = reviewed / "view.html"
    probed.write_text((reviewed / "report.html").read_text().replace("</body>", PROBE_VIEW + "</body>", 1))
    result = run_browser(binary, "--virtual-time-budget=5000", "--dump-dom",
                         probed.as_uri() + "#sort=objective&ascending&filter=search")
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    opened, typed = probe["fromAddress"], probe["typed"]
    assert opened["box"] == "search" and opened["shown"] == f"{len(searches)} of {len(board)} runs"
    ascending = searches.sort_values("objective", kind="stable")  # the page's sort keeps ties in board order too
    assert [run.split()[0] for run, _ in opened["rows"]] == list(ascending["name"])
    assert typed["box"] == "grid" and typed["shown"] == f"{len(grids)} of {len(board)} runs"
    assert sorted(run.split()[0] for run, _ in typed["rows"]) == sorted(grids["name"])
