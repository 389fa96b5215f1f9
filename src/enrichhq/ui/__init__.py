"""The web UI: server-rendered Jinja2 pages with htmx, behind a login."""
