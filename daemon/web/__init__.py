"""The dashboard at / (static page, script and style in static/), the live camera views and the 10-minute history.

Import the route modules directly (web.routes); this package file stays empty because core.py imports web.history.
"""
