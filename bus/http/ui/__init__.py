"""The operator's page (DESIGN §11): server-rendered pages over the same data as
the API, htmx and server-sent events for the live parts, a login that keeps a
session cookie, and a CSRF token on every action.

`sessions` is what the guard reads; `pages`, `actions`, `live` and `auth` are
the handlers, `views` shapes the data they show, `routes` adds them to the app.
"""
