"""A local HTTP server standing in for a Batfish service (there is none on the
test machines: Batfish is a Java service shipped as the batfish/allinone image).

It answers exactly the requests pybatfish makes for what the `batfish`
subscriber uses (Session(), set_network, init_snapshot, and answer() of
initIssues, fileParseStatus, parseWarning, undefinedReferences), all under
/v2 with the headers X-Batfish-Apikey and X-Batfish-Version:

    GET    /v2/question_templates?verbose=False         the question templates (name -> JSON text)
    GET    /v2/networks/{network}                        404 until created, then {"name": …}
    POST   /v2/networks?name={network}                   create the network
    GET    /v2/networks/{network}/snapshots?verbose=False   snapshot names
    DELETE /v2/networks/{network}/snapshots/{snapshot}   (overwrite=True, when it exists)
    POST   /v2/networks/{network}/snapshots/{snapshot}   the snapshot zip (application/octet-stream)
    POST   /v2/networks/{network}/work                   a work item: parse the snapshot, or answer a question
    GET    /v2/networks/{network}/work/{work_id}         {"workstatuscode": …, "task": …}, polled until terminated
    GET    /v2/networks/{network}/snapshots/{snapshot}/worklog/{work_id}   the log, when parsing failed
    PUT    /v2/networks/{network}/questions/{question}   the question JSON (octet-stream)
    GET    /v2/networks/{network}/questions/{question}/answer?snapshot=…   a TableAnswer

Its "analysis" of the uploaded configs follows a few rules, so tests can ask
for each kind of finding (real Batfish parses the vendor syntax):
- an empty file: fileParseStatus EMPTY;
- a line starting `bogus`: a parse warning, and an init issue "Parse warning";
- `ip access-group NAME …` without `ip access-list … NAME` in the same file:
  an undefined reference (ipv4 acl NAME), in undefinedReferences;
- a line `!! unparseable`: fileParseStatus FAILED, init issue "Parse error";
- a line `!! crash`: the parse work item terminates abnormally;
- `hang = True`: work items never finish.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TEMPLATES = {
    "initIssues": {"class": "org.batfish.question.initialization.InitIssuesQuestion", "differential": False,
                   "instance": {"description": "Return issues encountered when processing the snapshot.",
                                "instanceName": "initIssues", "tags": ["initialization"]}},
    "fileParseStatus": {"class": "org.batfish.question.initialization.FileParseStatusQuestion", "differential": False,
                        "instance": {"description": "Display file parse status", "instanceName": "fileParseStatus",
                                     "tags": ["initialization", "parse", "file"]}},
    "parseWarning": {"class": "org.batfish.question.initialization.ParseWarningQuestion", "differential": False,
                     "aggregateDuplicates": "${aggregateDuplicates}",
                     "instance": {"description": "Return warnings that occurred when parsing the snapshot.",
                                  "instanceName": "parseWarning", "tags": ["initialization", "parse", "file"],
                                  "variables": {"aggregateDuplicates": {"description": "Whether to aggregate duplicate results",
                                                                        "type": "boolean", "optional": True}}}},
    "undefinedReferences": {"class": "org.batfish.question.UndefinedReferencesQuestionPlugin$UndefinedReferencesQuestion",
                            "differential": False, "nodes": "${nodes}",
                            "instance": {"description": "Identify undefined references in configuration",
                                         "instanceName": "undefinedReferences", "tags": ["default"],
                                         "variables": {"nodes": {"description": "Nodes to look at", "type": "nodeSpec",
                                                                 "value": ".*"}}}},
}
CLASS_TO_NAME = {t["class"]: name for name, t in TEMPLATES.items()}


def _columns(*spec: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": n, "schema": s, "description": n, "isKey": True, "isValue": False} for n, s in spec]


COLUMNS = {
    "initIssues": _columns(("Nodes", "List<String>"), ("Source_Lines", "List<FileLines>"), ("Type", "String"),
                           ("Details", "String"), ("Line_Text", "String"), ("Parser_Context", "String")),
    "fileParseStatus": _columns(("File_Name", "String"), ("Status", "String"), ("File_Format", "String"),
                                ("Nodes", "List<String>")),
    "parseWarning": _columns(("Filename", "String"), ("Line", "Integer"), ("Text", "String"),
                             ("Parser_Context", "String"), ("Comment", "String")),
    "undefinedReferences": _columns(("File_Name", "String"), ("Struct_Type", "String"), ("Ref_Name", "String"),
                                    ("Context", "String"), ("Lines", "FileLines")),
}


def analyse(files: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Rows of each question for the uploaded config files (path in the snapshot -> text)."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TEMPLATES}
    for path, text in sorted(files.items()):
        host = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        lines = text.splitlines()
        status = "PASSED"
        acls = {m.group(1) for line in lines if (m := re.match(r"\s*ip access-list(?: \w+)? (\S+)", line))}
        for number, line in enumerate(lines, 1):
            where = [{"filename": path, "lines": [number]}]
            if line.strip() == "!! unparseable":
                status = "FAILED"
                rows["initIssues"].append({"Nodes": [host], "Source_Lines": where, "Type": "Parse error",
                                           "Details": "Error parsing configuration file", "Line_Text": line,
                                           "Parser_Context": "[cisco_configuration]"})
            elif line.startswith("bogus"):
                status = "PARTIALLY_UNRECOGNIZED" if status == "PASSED" else status
                rows["parseWarning"].append({"Filename": path, "Line": number, "Text": line,
                                             "Parser_Context": "[s_stanza cisco_configuration]",
                                             "Comment": "This syntax is unrecognized"})
                rows["initIssues"].append({"Nodes": [host], "Source_Lines": where, "Type": "Parse warning",
                                           "Details": "This syntax is unrecognized", "Line_Text": line,
                                           "Parser_Context": "[s_stanza cisco_configuration]"})
            elif (m := re.match(r"\s*ip access-group (\S+)", line)) and m.group(1) not in acls:
                rows["undefinedReferences"].append({"File_Name": path, "Struct_Type": "ipv4 acl", "Ref_Name": m.group(1),
                                                    "Context": "interface incoming filter",
                                                    "Lines": {"filename": path, "lines": [number]}})
        if not text.strip():
            status = "EMPTY"
        rows["fileParseStatus"].append({"File_Name": path, "Status": status, "File_Format": "CISCO_IOS",
                                        "Nodes": [host] if status != "EMPTY" else []})
    return rows


@dataclass
class BatfishStandIn:
    hang: bool = False
    requests: list[str] = field(default_factory=list)  # "METHOD /route/{template}" in order
    headers: list[dict[str, str]] = field(default_factory=list)
    networks: set[str] = field(default_factory=set)
    snapshots: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    questions: dict[tuple[str, str], str] = field(default_factory=dict)  # (network, name) -> question kind
    work: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource
        self.requests.append(f"{request.method} {route.canonical if route is not None else request.path}")
        self.headers.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-batfish")})
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/v2/question_templates", self.question_templates)
        r.add_post("/v2/networks", self.init_network)
        r.add_get("/v2/networks/{network}", self.get_network)
        r.add_get("/v2/networks/{network}/snapshots", self.list_snapshots)
        r.add_post("/v2/networks/{network}/snapshots/{snapshot}", self.upload_snapshot)
        r.add_delete("/v2/networks/{network}/snapshots/{snapshot}", self.delete_snapshot)
        r.add_post("/v2/networks/{network}/work", self.queue_work)
        r.add_get("/v2/networks/{network}/work/{work_id}", self.work_status)
        r.add_get("/v2/networks/{network}/snapshots/{snapshot}/worklog/{work_id}", self.work_log)
        r.add_put("/v2/networks/{network}/questions/{question}", self.upload_question)
        r.add_get("/v2/networks/{network}/questions/{question}/answer", self.answer)
        return app

    async def question_templates(self, request: web.Request) -> web.Response:
        return web.json_response({name: json.dumps(t) for name, t in TEMPLATES.items()})

    async def get_network(self, request: web.Request) -> web.Response:
        name = request.match_info["network"]
        if name not in self.networks:
            return web.json_response({"error": f"Network '{name}' not found"}, status=404)
        return web.json_response({"name": name})

    async def init_network(self, request: web.Request) -> web.Response:
        self.networks.add(request.query["name"])
        return web.Response()

    async def list_snapshots(self, request: web.Request) -> web.Response:
        network = request.match_info["network"]
        return web.json_response([s for (n, s) in self.snapshots if n == network])

    async def upload_snapshot(self, request: web.Request) -> web.Response:
        key = (request.match_info["network"], request.match_info["snapshot"])
        with zipfile.ZipFile(io.BytesIO(await request.read())) as zf:
            self.snapshots[key] = {name.split("/", 1)[1]: zf.read(name).decode() for name in zf.namelist()
                                   if not name.endswith("/")}
        return web.Response()

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        self.snapshots.pop((request.match_info["network"], request.match_info["snapshot"]), None)
        return web.Response()

    async def queue_work(self, request: web.Request) -> web.Response:
        item = await request.json()
        self.work[item["id"]] = item
        return web.Response()

    def _work_outcome(self, item: dict[str, Any]) -> str:
        if self.hang:
            return "ASSIGNED"
        params = item.get("requestParams", {})
        files = self.snapshots.get((item.get("containerName"), params.get("testrig")), {})
        if "answer" not in params and any("!! crash" in text for text in files.values()):
            return "TERMINATEDABNORMALLY"
        return "TERMINATEDNORMALLY"

    async def work_status(self, request: web.Request) -> web.Response:
        item = self.work[request.match_info["work_id"]]
        return web.json_response({"workstatuscode": self._work_outcome(item), "task": {"batches": []}})

    async def work_log(self, request: web.Request) -> web.Response:
        return web.Response(text="Parsing configs\n!! crash: org.batfish.common.BatfishException: boom in r9.cfg\n")

    async def upload_question(self, request: web.Request) -> web.Response:
        question = json.loads(await request.read())
        self.questions[(request.match_info["network"], request.match_info["question"])] = CLASS_TO_NAME[question["class"]]
        return web.Response()

    async def answer(self, request: web.Request) -> web.Response:
        network = request.match_info["network"]
        kind = self.questions[(network, request.match_info["question"])]
        files = self.snapshots[(network, request.query["snapshot"])]
        configs = {path: text for path, text in files.items() if path.startswith("configs/")}
        element = {"class": "org.batfish.datamodel.table.TableAnswerElement",
                   "metadata": {"columnMetadata": COLUMNS[kind], "textDesc": kind},
                   "rows": analyse(configs)[kind]}
        return web.json_response({"answerElements": [element], "status": "SUCCESS",
                                  "question": {"instance": {"instanceName": request.match_info["question"]}}})
