"""report.html: one self-contained page (no network, no server, pictures inlined) to review a sweep.

The leaderboard leads, in its column order (cnnsweep.review.leaderboard): click a header to sort by it, type
in the box to filter rows; the best row is highlighted and the baseline marked; each run links to its
folder and files. The address can carry a view, `report.html#sort=val_accuracy&filter=sgd` (add
`&ascending` to sort up), so a sorted, filtered view can be shared.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from cnnsweep.review.leaderboard import is_missing, run_folder
from cnnsweep.review.plots import short_name
from cnnsweep.run.records import HISTORY_FILE, METRICS_FILE, MODEL_FILE, write_atomic

PAGE_FILE = "report.html"
ERROR_WIDTH = 60  # characters of an error shown in its cell (all of it on hover)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.summary{margin:.2em 0 .8em}
#filter{width:22em;padding:3px 6px;margin-bottom:6px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;white-space:nowrap}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0;user-select:none}
th.sorted-desc::after{content:" \\25BC"}th.sorted-asc::after{content:" \\25B2"}
td.text{text-align:left}
tr.best td{background:#e4f5e4;font-weight:600}
#leaderboard tr.baseline td:nth-child(2)::after{content:" (baseline)";font-weight:400;color:#555}
tr.failed td{color:#b00}tr.pruned td{color:#a60}tr.running td{color:#777}
td.error{max-width:24em;overflow:hidden;text-overflow:ellipsis}
.files a{margin-right:.4em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
"""

SCRIPT = """
(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.getAttribute('data-value');
    if (raw === null || raw === '') return null;
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }
  function sortBy(table, index, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x === null && y === null) return 0;
      if (x === null) return 1;   /* empty cells last, either way */
      if (y === null) return -1;
      if (x < y) return ascending ? -1 : 1;
      if (x > y) return ascending ? 1 : -1;
      return 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.classList.remove('sorted-asc', 'sorted-desc');
      if (i === index) th.classList.add(ascending ? 'sorted-asc' : 'sorted-desc');
    });
  }
  function filterRows(table, text) {
    var needle = text.toLowerCase(), shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      row.hidden = needle !== '' && row.textContent.toLowerCase().indexOf(needle) < 0;
      if (!row.hidden) shown += 1;
    });
    var counter = document.getElementById('shown');
    if (counter && table.id === 'leaderboard') counter.textContent = shown + ' of ' + table.tBodies[0].rows.length + ' runs';
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener('click', function () {
        var ascending = th.classList.contains('sorted-desc');
        sortBy(table, index, ascending);
      });
    });
  });
  var board = document.getElementById('leaderboard');
  var box = document.getElementById('filter');
  if (board && box) {
    box.addEventListener('input', function () { filterRows(board, box.value); });
    filterRows(board, '');
    var view = new URLSearchParams(window.location.hash.slice(1));
    if (view.has('filter')) { box.value = view.get('filter'); filterRows(board, box.value); }
    if (view.has('sort')) {
      var names = Array.prototype.map.call(board.tHead.rows[0].cells, function (th) { return th.textContent; });
      var index = names.indexOf(view.get('sort'));
      if (index >= 0) sortBy(board, index, view.has('ascending'));
    }
  }
})();
"""


def write_page(frame: pd.DataFrame, seeds: Optional[pd.DataFrame], roots: list[Path], images: list[Path],
               path: Path) -> Path:
    """report.html beside `images` (inlined, so the page travels alone)."""
    sections = [_summary(frame, roots), "<h2>Leaderboard</h2>",
                '<input id="filter" type="search" placeholder="filter: a status, a value, a run…" '
                'aria-label="filter rows"> <span id="shown"></span>',
                f'<div class="scroll">{_table(frame, roots, path.parent, "leaderboard")}</div>']
    if seeds is not None:
        sections += ["<h2>Over seeds</h2>", f'<div class="scroll">{_table(seeds, roots, path.parent, "seeds")}</div>']
    if images:
        sections.append("<h2>Pictures</h2>")
        for image in images:
            encoded = base64.b64encode(image.read_bytes()).decode("ascii")
            caption = html.escape(image.stem.replace("_", " "))
            sections.append(f'<figure><img alt="{caption}" src="data:image/png;base64,{encoded}">'
                            f"<figcaption>{caption} ({html.escape(image.name)})</figcaption></figure>")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><title>cnnsweep report</title>"
            f"<style>{STYLE}</style></head><body><h1>cnnsweep report</h1>{''.join(sections)}"
            f"<script>{SCRIPT}</script></body></html>\n")
    write_atomic(path, page)
    return path


def _summary(frame: pd.DataFrame, roots: list[Path]) -> str:
    text = f"{len(frame)} runs from {html.escape(', '.join(map(str, roots)))}"
    counts = frame["status"].value_counts()
    text += " (" + ", ".join(f"{count} {html.escape(str(status))}" for status, count in counts.items()) + ")"
    ranked = frame[frame["rank"].notna()]
    if not ranked.empty:
        best = ranked.iloc[0]
        text += (f". Best: <b>{html.escape(short_name(best['run']))}</b>, {html.escape(str(best['objective_metric']))} "
                 f"{_number(best['objective'])}")
        if pd.notna(best.get("vs_baseline")):
            text += f" ({_signed(best['vs_baseline'])} against the baseline)"
    return f'<p class="summary">{text}.</p>'


def _table(frame: pd.DataFrame, roots: list[Path], page_folder: Path, name: str) -> str:
    columns = list(frame.columns)
    with_files = "run" in columns
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns) + ("<th>files</th>" if with_files else "")
    body = []
    for _, row in frame.iterrows():
        classes = [str(row.get("status", ""))]
        if not is_missing(row.get("rank")) and row.get("rank") == 1:
            classes.append("best")
        if row.get("baseline") == True:  # noqa: E712  (NaN where there is none)
            classes.append("baseline")
        cells = [_cell(column, row[column], roots, page_folder) for column in columns]
        if with_files:
            cells.append(f'<td class="text files">{_file_links(str(row["run"]), roots, page_folder)}</td>')
        body.append(f'<tr class="{" ".join(classes)}">{"".join(cells)}</tr>')
    return (f'<table id="{name}" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _cell(column: str, value: Any, roots: list[Path], page_folder: Path) -> str:
    if is_missing(value):
        return '<td data-value=""></td>'
    if column == "run":
        folder = os.path.relpath(run_folder(str(value), roots), page_folder)
        return (f'<td class="text" data-value="{html.escape(str(value))}" title="{html.escape(str(value))}">'
                f'<a href="{html.escape(folder)}/">{html.escape(short_name(str(value)))}</a></td>')
    if isinstance(value, bool) or str(type(value).__name__) == "bool_":
        return f'<td data-value="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        shown = _signed(value) if column == "vs_baseline" else _number(value)
        return f'<td data-value="{value!r}">{shown}</td>'
    text = str(value)
    short = text if len(text) <= ERROR_WIDTH else text[:ERROR_WIDTH] + "…"
    kind = "text error" if column == "error" else "text"
    return f'<td class="{kind}" data-value="{html.escape(text)}" title="{html.escape(text)}">{html.escape(short)}</td>'


def _file_links(run: str, roots: list[Path], page_folder: Path) -> str:
    folder = run_folder(run, roots)
    files = [(".hydra/config.yaml", "config"), (METRICS_FILE, "metrics"), (HISTORY_FILE, "history"),
             (MODEL_FILE, "model")]
    files += [(log.name, "log") for log in sorted(folder.glob("*.log")) if log.name != "tensorflow.log"][:1]
    links = [f'<a href="{html.escape(os.path.relpath(folder / file, page_folder))}">{label}</a>'
             for file, label in files if (folder / file).is_file()]
    return "".join(links)


def _number(value: Any) -> str:
    number = float(value)
    if number.is_integer() and abs(number) >= 1:
        return f"{int(number):,}"
    return f"{number:.4f}" if abs(number) >= 1e-3 or number == 0 else f"{number:.3g}"


def _signed(value: Any) -> str:
    return f"{float(value):+.4f}"
