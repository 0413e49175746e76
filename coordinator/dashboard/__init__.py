"""The operator's web dashboard at ``/ui``: server-rendered pages over the coordinator's
service layer, with the API's roles, a signed session cookie and CSRF tokens; every asset
(templates, htmx) ships in the package, so it works offline."""
