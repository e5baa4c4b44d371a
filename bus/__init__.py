"""The core of hookbus, in layers: each subpackage owns one concern and imports
only the layers below it (tests/test_layers.py says so), from the bottom:

    settings, secrets, logs,   the foundation, the modules right here: the settings
    filemodes, signing         types and their validation, the secret registry and
                               redaction, logging, owner-only files, HMAC signatures
    events/                    the CloudEvent, its vocabulary, text and time helpers
    store/                     the journal: events, cursors, retries, dead letters
    transport/                 the ZeroMQ broker, its protocol, clients, CURVE, the spool
    delivery/                  the subscriber contract and the runner that feeds it
    notify/, checks/           notification support (messages, templates, digests);
                               expectations (side by side, not importing each other)
    jobs/                      `hookbus run`: the job model, runner, commands, processes
    http/                      the aiohttp application: ingest, API, job history

Above them: `hookbus.adapters` (each tool's payloads), `hookbus.subscribers`
(one module per kind) and `hookbus` itself (the configuration file, the
assembled application, the CLI).
"""
