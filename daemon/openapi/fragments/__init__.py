"""One module per dialect or route group, each describing its routes for /openapi.json.

A fragment module may define (all optional but PATHS):
  PATHS    {path template: {method: operation}}, built with the helpers in ..parts
  TAGS     [{"name", "description"}]: the groups the docs page shows
  SCHEMAS  named schemas, referenced as #/components/schemas/NAME
  ORDER    where its group goes on the API page (low first; default 100)
  REQUIRES a module name: the fragment counts only when that module can be imported (routes of a package that
           another branch adds, e.g. the dashboard)
A path item may carry "x-perch-listeners": ["main"] when only the main (CodeProject) listener serves it.
Every module in this package is read: adding routes means adding or extending a fragment, nothing else.
"""
