"""The HTTP side: the aiohttp application (answers, the guard, ingest, the API,
job history, OpenAPI, connection limits). Imports jobs, notify, delivery and the
layers below them; what lives above (the tools' adapters, the ping API) is
added by the application through `create_app`'s arguments.
"""
