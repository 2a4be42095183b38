"""The coordinator's web dashboard: pages at `/`, `/tasks/{id}`, `/tasks/{id}/rounds/{n}` and
`/accounts/{address}`, served with their own script and styles (no CDN, no request elsewhere).

- :mod:`backend.dashboard.status`: the plain words for where a task stands and what a round made
  of an update, the one place they are written (the JSON API returns them, the pages show them);
- :mod:`backend.dashboard.evaluation`: each published model's accuracy and loss on the evaluation
  set a coordinator's operator may hold for a task (the chart's data);
- :mod:`backend.dashboard.pages`: the HTML routes (Jinja2, autoescaped) and the static assets;
  the pages fetch the JSON API themselves and poll it while a round runs.
"""
