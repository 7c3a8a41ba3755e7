"""The HTML discrepancy report: ``bnparity report DIR_OR_FILES... -o reports/index.html``.

One self-contained file rendered from results files alone. The modules, in pipeline order:

* ``model``: results files -> typed records grouped into environments, cells, cases and columns;
* ``analysis``: where each cell's discrepancy starts, and drift between environments;
* ``gaps``: the portability bound between two adapters (the float64 oracle recomputed per setting);
* ``views``: the server-side sections the template prints;
* ``blob``: the data object the page's JavaScript reads (column names and vocabulary included);
* ``plots`` and ``bench``: the sweep figures and the benchmark section;
* ``page``: the Jinja environment, the blob's encoding and file writing; ``cli``: the command.

    >>> render_paths([Path("reports")], Path("reports/index.html"))   # every env below, merged
"""

from harness.report.page import render, render_paths, write

__all__ = ["render", "render_paths", "write"]
