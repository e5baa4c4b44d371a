"""The OpenAPI description served at /openapi.json."""

from __future__ import annotations

from typing import Any

from hookbus import __version__

_ERROR = {"description": "refused; the body names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"application/json": {"schema": {"type": "object"}}}

# healthchecks.io-compatible pings (adapters/ping.py): the check's key is the credential.
_PING_PARAMS = [
    {"name": "key", "in": "path", "required": True, "description": "a [[checks]] key: a UUID or a slug",
     "schema": {"type": "string", "pattern": "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[a-z0-9][a-z0-9_-]{0,99})$"}},
    {"name": "rid", "in": "query", "description": "run id: tells concurrent runs of one check apart",
     "schema": {"type": "string", "format": "uuid"}},
]
_PING_ACTION = {"name": "action", "in": "path", "required": True, "description": "start, fail, log, or an exit status 0-255",
                "schema": {"type": "string", "pattern": "^(start|fail|log|0*([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]))$"}}
_PING_OP = {"security": [], "parameters": _PING_PARAMS,
            "responses": {"200": {"description": "OK; the Ping-Body-Limit header says how much of a body is kept",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "400": _ERROR, "404": _ERROR}}
_CHECK = {"name": "name", "in": "path", "required": True, "description": "a check's name", "schema": {"type": "string"}}
_WORD = {"type": "string", "minLength": 1, "maxLength": 1000}
_SILENCE = {
    "type": "object", "additionalProperties": False, "required": ["for"],
    "anyOf": [{"required": ["check"]}, {"required": ["job"]}, {"required": ["type"]}],
    "properties": {
        "check": {**_WORD, "description": "a check's name"}, "job": {**_WORD, "description": "a job's name"},
        "type": {**_WORD, "description": "an event type glob, e.g. backup.check.*"},
        "for": {"description": "how long: seconds, or a number and a unit (s, m, h, d)",
                "oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 31622400},
                          {"type": "string", "pattern": "^([1-9][0-9]{0,5}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|[1-9][0-9]?d)$"}]},
        "comment": {"type": "string", "maxLength": 1000}}}
_PING: dict[str, Any] = {
    "get": {**_PING_OP, "summary": "Ping a check (healthchecks.io-compatible): success, start, fail, log or exit status"},
    "head": {**_PING_OP, "summary": "Ping a check, without an answer body",
             "responses": {"200": {"description": "OK"}, "400": {"description": "refused"}, "404": {"description": "unknown key"}}},
    "post": {**_PING_OP, "summary": "Ping a check with the run's log as the body (kept as the job's output tail)",
             "requestBody": {"required": False, "content": {"text/plain": {"schema": {"type": "string"}}}}},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hookbus", "version": __version__,
             "description": "The event bus that backup tools report to. A 202 means the event is on disk."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}, "field": {"type": "string"}}},
            "CloudEvent": {
                "type": "object", "required": ["specversion", "id", "source", "type"],
                # Extension attributes: lowercase names of 1-20 letters or digits, scalar values.
                "propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},
                "additionalProperties": {"anyOf": [
                    {"type": ["string", "boolean", "null"]},
                    {"type": "integer", "minimum": -2**31, "maximum": 2**31 - 1},  # CloudEvents Integer
                ]},
                "properties": {
                    "specversion": {"type": "string", "enum": ["1.0"]},
                    "id": {"type": "string", "minLength": 1},
                    "source": {"type": "string", "minLength": 1},
                    "type": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]*$"},
                    "time": {"type": ["string", "null"], "format": "date-time"},
                    "subject": {"type": ["string", "null"]},
                    "datacontenttype": {"type": ["string", "null"]},
                    "dataschema": {"type": ["string", "null"]},
                    "data": {},
                },
            },
            "Deliveries": {
                "description": "per subscriber: the last attempt's outcome and the attempts kept (the first and the last ten)",
                "type": "array", "items": {
                    "type": "object", "required": ["subscriber", "outcome", "attempts"],
                    "properties": {
                        "subscriber": {"type": "string"},
                        "outcome": {"type": "string", "enum": ["delivered", "failed", "dead", "silenced"]},
                        "attempts": {"type": "array", "items": {
                            "type": "object", "required": ["attempt", "at", "outcome", "status", "reason"],
                            "properties": {
                                "attempt": {"type": "integer", "minimum": 0, "description": "0: not sent (silenced)"},
                                "at": {"type": "number", "description": "epoch seconds"},
                                "outcome": {"type": "string", "enum": ["delivered", "failed", "dead", "silenced"]},
                                "status": {"type": ["integer", "null"],
                                           "description": "the receiver's answer: an HTTP status, an exit status"},
                                "reason": {"type": "string", "maxLength": 300, "description": "why it failed (scrubbed)"}}}}}}},
            "Accepted": {
                "type": "object", "required": ["accepted"],
                "properties": {"accepted": {"type": "array", "items": {
                    "type": "object", "required": ["id", "seq"],
                    "properties": {"id": {"type": "string"}, "seq": {"type": "integer"}, "duplicate": {"type": "boolean"}}}}},
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/events": {"post": {
            "summary": "Publish CloudEvents (structured, binary with ce-* headers, or batch)",
            "requestBody": {"required": True, "content": {
                "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/CloudEvent"}},
                "application/cloudevents-batch+json": {"schema": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/CloudEvent"}}},
            }},
            "responses": {"202": {"description": "durably accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                          "400": _ERROR, "401": _ERROR, "413": _ERROR, "415": _ERROR, "503": _ERROR},
        }, "get": {
            "summary": "The operator's page of the journal (HTML, DESIGN §11; `[http] ui = false` removes it): newest first, live",
            "parameters": [
                {"name": "type", "in": "query", "schema": {"type": "string"}, "description": "glob over event types"},
                {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
                 "description": "show the events before this seq"},
            ],
            "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "303": {"description": "to /login, for a browser without a session when tokens are set"},
                          "400": _ERROR, "401": _ERROR},
        }},
        "/ingest/{adapter}": {"post": {
            "summary": "A tool's native payload, translated to canonical events",
            "parameters": [{"name": "adapter", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": _JSON},
            "responses": {"202": {"description": "durably accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                          "400": _ERROR, "401": _ERROR, "404": _ERROR, "413": _ERROR, "415": _ERROR},
        }},
        "/ping/{key}": _PING,
        "/ping/{key}/{action}": {**{m: {**op, "parameters": [*op["parameters"], _PING_ACTION]} for m, op in _PING.items()}},
        "/api/events": {"get": {
            "summary": "Read the journal",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}},
                {"name": "type", "in": "query", "schema": {"type": "string"}, "description": "glob over event types"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            "responses": {"200": {"description": "events with their seq", "content": _JSON}, "400": _ERROR, "401": _ERROR},
        }},
        "/api/events/{seq}/deliveries": {"get": {
            "summary": "The delivery trail of one event: per subscriber, each attempt with its time, outcome, "
                       "the receiver's status and a short reason",
            "parameters": [{"name": "seq", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 2**62}},
                           {"name": "subscriber", "in": "query", "schema": {"type": "string"}, "description": "one subscriber's"}],
            "responses": {"200": {"description": "the trail", "content": {"application/json": {"schema": {
                "type": "object", "required": ["seq", "type", "deliveries"],
                "properties": {"seq": {"type": "integer"}, "type": {"type": "string"},
                               "deliveries": {"$ref": "#/components/schemas/Deliveries"}}}}}},
                          "400": _ERROR, "401": _ERROR, "404": _ERROR}}},
        "/api/jobs": {"get": {
            "summary": "Job history, newest first: every job seen in backup.job.* / backup.task.* events",
            "parameters": [{"name": "job", "in": "query", "schema": {"type": "string"}, "description": "job name"},
                           {"name": "outcome", "in": "query", "schema": {"type": "string", "enum": ["running", "success", "warning", "failed", "cancelled"]}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": {"description": "jobs without their tasks", "content": _JSON}, "400": _ERROR, "401": _ERROR}}},
        "/api/jobs/{job_id}": {"get": {
            "summary": "One job with every task and its status, and its events with their delivery trail",
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the job", "content": {"application/json": {"schema": {
                "type": "object", "required": ["job_id", "events"],
                "properties": {"job_id": {"type": "string"}, "events": {"type": "array", "items": {
                    "type": "object", "required": ["seq", "type", "deliveries"],
                    "properties": {"seq": {"type": "integer"}, "type": {"type": "string"},
                                   "deliveries": {"$ref": "#/components/schemas/Deliveries"}}}}}}}}},
                          "401": _ERROR, "404": _ERROR}}},
        "/api/subscribers": {"get": {"summary": "Subscribers, cursors, lag; the nodes and which runs what", "responses": {"200": {"description": "ok", "content": _JSON}, "401": _ERROR}}},
        "/api/dead-letters": {"get": {
            "summary": "Dead letters",
            "parameters": [{"name": "subscriber", "in": "query", "schema": {"type": "string"}},
                           {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["dead", "replaying", "delivered", "all"]}}],
            "responses": {"200": {"description": "ok", "content": _JSON}, "400": _ERROR, "401": _ERROR}}},
        "/api/dead-letters/{id}/retry": {"post": {
            "summary": "Queue one dead letter for redelivery",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"202": {"description": "queued", "content": _JSON}, "400": _ERROR, "401": _ERROR, "404": _ERROR}}},
        "/api/checks": {"get": {"summary": "Each check: state, last seen, next due, schedule",
                                "responses": {"200": {"description": "ok", "content": _JSON}, "401": _ERROR}}},
        "/api/checks/{name}/pause": {"post": {"summary": "Pause a check: no alerts until resumed", "parameters": [_CHECK],
                                              "responses": {"200": {"description": "paused", "content": _JSON}, "401": _ERROR, "404": _ERROR}}},
        "/api/checks/{name}/resume": {"post": {"summary": "Resume a check: it waits for its next due time, counted from now",
                                               "parameters": [_CHECK],
                                               "responses": {"200": {"description": "resumed", "content": _JSON}, "401": _ERROR, "404": _ERROR}}},
        "/api/silences": {
            "get": {"summary": "Silences, running and recently ended", "responses": {"200": {"description": "ok", "content": _JSON}, "401": _ERROR}},
            "post": {"summary": "Hold notifications of a check, a job or an event type for a while",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _SILENCE}}},
                     "responses": {"201": {"description": "the silence, with its id", "content": _JSON}, "400": _ERROR, "401": _ERROR,
                                   "404": _ERROR}}},
        "/api/silences/{id}": {"delete": {"summary": "End a running silence now",
                                          "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                                          "responses": {"200": {"description": "ended", "content": _JSON}, "400": _ERROR, "401": _ERROR,
                                                        "404": _ERROR}}},
        "/badge/{key}.svg": {"get": {"summary": "A check's state as an SVG badge; its own read-only key", "security": [],
                                     "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                                     "responses": {"200": {"description": "the badge", "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
                                                   "404": _ERROR}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok", "content": _JSON}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": _ERROR}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "ok", "content": _JSON}}}},
    },
}
