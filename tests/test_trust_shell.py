"""Event data never becomes shell code: every place a template meets a shell.

The injection corpus goes through a real `hookbus serve` to `shell`
subscribers (bare words, double quotes, a heredoc, a `#!/bin/bash` script),
through `hookbus run` to job hooks and the backup, prune and check commands,
and through property tests that run real bash: whatever the string, the
command receives exactly it and runs nothing else. Templates that put a value
where no reference could be safe are refused by `check-config`, naming the key.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookbus.bus.events.event import Event
from hookbus.bus.notify.templates import TemplateError, render_shell

from .conftest import Receiver, Site, cloudevent, http_ready, read_jsonl, wait_for
from .test_jobs import add_jobs, spooled_events
from .test_process import jsonl_sub, run_cli

CANARY = "/tmp/hookbus-pwned-canary"  # every hostile value tries to create this file


def corpus(canary: str = CANARY) -> list[str]:
    """Strings an attacker would send: each breaks out of one quoting context if pasted in."""
    return [
        f"Repo$(touch {canary})",
        f'x"; touch {canary}; echo "',
        f"x'; touch {canary}; echo '",
        f"`touch {canary}`",
        f"$(touch {canary})\nEOF\ntouch {canary}\ncat <<EOF",
        f"a\\\"; touch {canary} #",
        "--output=/tmp/hookbus-option-injection",
        "-n",
        f"${{IFS}}touch${{IFS}}{canary}",
        "\u00e9\u2603 \t tabs and unicode \\ back\\slash $HOME *",
        "",
    ]


def event(subject: str | None = "MyRepository", **data: Any) -> Event:
    return Event(id="e1", source="test://trust", type="backup.log", subject=subject, data={"job_id": "j", **data})


def run_bash(template: str, value: str, shell: str = "/bin/bash") -> str:
    """Render a template over an event whose data.v is `value` and run it with real bash; return its stdout."""
    bound = render_shell(template, event(v=value), shell=shell)
    text = bound.text
    if text.lstrip().startswith("#!"):
        done = subprocess.run(["/bin/bash", "-c", text.split("\n", 1)[1]], env={**os.environ, **bound.env},
                              capture_output=True, timeout=20, check=False)
    else:
        done = subprocess.run([shell, "-c", text], env={**os.environ, **bound.env}, capture_output=True, timeout=20,
                              stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8", errors="surrogateescape")


@pytest.fixture(autouse=True)
def _no_canary() -> Any:
    Path(CANARY).unlink(missing_ok=True)
    yield
    assert not Path(CANARY).exists(), "event data ran as a command"


# Shapes check-config accepts, and what the command then prints for a value v.
SHAPES: list[tuple[str, Any]] = [
    ("printf '%s' {{ data.v }}", lambda v: v),
    ("printf '%s' \"{{ data.v }}\"", lambda v: v),
    ("printf '%s' \"pre {{ data.v }} post\"", lambda v: f"pre {v} post"),
    ("printf '%s' pre{{ data.v }}post", lambda v: f"pre{v}post"),
    ("printf '%s' --opt={{ data.v }}", lambda v: f"--opt={v}"),
    ("printf -- '%s|%s' \"{{ data.v }}\" {{ data.v }}", lambda v: f"{v}|{v}"),
    ("cat <<EOF\n{{ data.v }}\nEOF", lambda v: v + "\n"),
    ("cat <<-EOF\n\tline: {{ data.v }}\n\tEOF", lambda v: f"line: {v}\n"),
    ("cat <<< \"{{ data.v }}\"", lambda v: v + "\n"),
    ("printf '%s' \"{{ data.v }}\" | cat | tee /dev/null", lambda v: v),
    ("#!/bin/bash\nprintf '%s' \"{{ data.v }}\"", lambda v: v),
    ("echo \"v: {{ data.v }}\"", lambda v: f"v: {v}\n"),
    ("echo \"v: {{ data.v }}\" > /dev/null && printf '%s' \"$HOME\" >/dev/null; printf ok", lambda v: "ok"),
    ("printf '%s' 'fixed' {# {{ data.v }} #}", lambda v: "fixed"),
    ("printf '%s' \"{{ data.v | upper }}\"", lambda v: v.upper()),
    ("set -euo pipefail\nexport LANG=C\ncd /tmp\nprintf '%s' \"{{ data.v }}\"", lambda v: v),
    ("printf '%s' \"{{ data.v }}\" >/dev/null 2>&1 && curl --version >/dev/null; printf ok", lambda v: "ok"),
    ("{% if data.v %}printf '%s' \"[{{ data.v }}]\"{% else %}printf empty{% endif %}", lambda v: f"[{v}]" if v else "empty"),
]


@pytest.mark.parametrize(("template", "expected"), SHAPES, ids=[s[0][:30] for s in SHAPES])
def test_the_corpus_arrives_exactly_in_every_accepted_shape(template: str, expected: Any) -> None:
    for value in corpus():
        assert run_bash(template, value) == expected(value), (template, value)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_HOSTILE_TEXT = st.one_of(_TEXT, st.lists(st.sampled_from(
    ['"', "'", "$", "`", "\\", "\n", "-", "--", "$(", ")", ";", "|", "&", "EOF", "*", "~", "{", "}", " ", "é", "!"]),
    max_size=12).map("".join))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_HOSTILE_TEXT, shape=st.sampled_from(SHAPES))
def test_any_string_arrives_exactly_and_runs_nothing(value: str, shape: tuple[str, Any]) -> None:
    template, expected = shape
    assert run_bash(template, value) == expected(value)


@given(value=st.text(max_size=10).map(lambda s: s + "\x00"))
@settings(max_examples=20, deadline=None)
def test_a_nul_byte_is_refused_not_cut(value: str) -> None:
    with pytest.raises(TemplateError, match="NUL"):
        render_shell("printf '%s' \"{{ data.v }}\"", event(v=value), shell="/bin/bash")


# Pieces of shell that templates are made of; any mix that is accepted must run nothing from the value.
_PIECES = ["echo", "printf '%s'", "cat", "git log", "--", "-n", '"', "'", "`", "$(", ")", "${", "}", "$((", "))",
           "<<EOF\n", "\nEOF\n", "<<'EOF'\n", "|", ";", "&&", "\n", " ", "x=", "[[", "]]", "#", "\\", "bash -c",
           "eval", "sh", "{{ data.v }}", "{{ data.v }}", "{{ subject }}", ">", "/dev/null", "-o", "=", "a"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=10))
def test_whatever_template_is_accepted_never_runs_the_value(pieces: list[str]) -> None:
    template = " ".join(pieces)
    hostile = event(subject=f"$(touch {CANARY})", v=f"\"'`touch {CANARY}`'\"; touch {CANARY} #\nEOF\ntouch {CANARY}")
    try:
        bound = render_shell(template, hostile, shell="/bin/bash")
    except TemplateError:
        return  # refused: nothing runs
    with tempfile.TemporaryDirectory() as scratch:  # where its redirections write
        subprocess.run(["/bin/bash", "-c", bound.text], env={**os.environ, **bound.env}, capture_output=True,
                       stdin=subprocess.DEVNULL, cwd=scratch, timeout=20, check=False)
    assert not Path(CANARY).exists(), template


@pytest.mark.parametrize(("command", "says"), [
    ("git -C repo log -1 {{ data.job }}", "does not know to take its arguments as data"),
    ("echo '{{ subject }}'", "inside single quotes"),
    ("echo `echo {{ subject }}`", "backticks"),
    ('bash -c "echo x{{ subject }}"', "argument of 'bash'"),
    ('echo "x{{ subject }}" | sh', "pipe into 'sh'"),
    ("cat <<'EOF'\n{{ subject }}\nEOF", "quoted heredoc"),
    ("{{ data.job }} --version", "name of the command"),
    ("echo $(( {{ data.duration_s }} + 1 ))", "`$(` is outside"),
    ('[[ "x{{ subject }}" == xy ]]', "`[[` is outside"),
    ("echo \"{{ subject }}\"", "starts an argument of 'echo'"),
    ("curl https://hc-ping.com/x/{{ subject }}", "add --globoff"),
    ('#!/usr/bin/env python3\nprint("{{ subject }}")', "not a POSIX shell"),
    ("{{ if .Error }}curl x{{ end }}", "template error"),
])
async def test_check_config_refuses_unsafe_templates_naming_the_key(site: Site, command: str, says: str) -> None:
    site.configure([jsonl_sub(site), {"name": "hook", "kind": "shell", "events": ["backup.job.finished"], "command": command}])
    done = await run_cli("check-config", "--config", str(site.config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "subscribers[1] (hook).command" in done.stderr and says in done.stderr, done.stderr


async def test_the_corpus_through_serve_reaches_shell_hooks_as_data(site: Site, procs: Any, tmp_path: Path) -> None:
    outs = {name: tmp_path / f"{name}.out" for name in ("dq", "heredoc", "script", "bare")}
    site.configure([jsonl_sub(site),
                    {"name": "dq", "kind": "shell", "events": ["backup.log"],
                     "command": f'echo "subject={{{{ subject }}}} msg {{{{ data.message }}}} done" >> {outs["dq"]}'},
                    {"name": "heredoc", "kind": "shell", "events": ["backup.log"],
                     "command": f"cat >> {outs['heredoc']} <<EOF\nmsg: {{{{ data.message }}}} $HOOKBUS_EVENT_TYPE\nEOF"},
                    {"name": "script", "kind": "shell", "events": ["backup.log"],
                     "command": f"#!/bin/bash\nprintf 'msg=%s\\n' \"{{{{ data.message }}}}\" >> {outs['script']}"},
                    {"name": "bare", "kind": "shell", "events": ["backup.log"],
                     "command": f"printf '%s\\n' {{{{ data.message }}}} >> {outs['bare']}"}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    values = [v for v in corpus() if "\n" not in v]  # one line each, so the files can be compared line by line
    for i, value in enumerate(values):
        done = await run_cli("emit", "backup.log", f"--subject={value or '-'}", "--source", "test://corpus",
                             "--data=" + orjson.dumps({"job_id": f"j{i}", "message": value}).decode(),
                             "--config", str(site.config))
        assert done.returncode == 0, done.stderr
    for out in outs.values():
        await wait_for(lambda out=out: out.exists() and out.read_text().count("\n") >= len(values), 30, f"{out.name}")
    assert outs["dq"].read_text().splitlines() == [f"subject={v or '-'} msg {v} done" for v in values]
    assert outs["heredoc"].read_text().splitlines() == [f"msg: {v} backup.log" for v in values]
    assert outs["script"].read_text().splitlines() == [f"msg={v}" for v in values]
    assert outs["bare"].read_text().splitlines() == values


async def test_the_corpus_through_a_job_reaches_hooks_and_tasks_as_data(site: Site, tmp_path: Path) -> None:
    """A backup prints hostile text; prune, check and a post-hook echo the backup's output back."""
    printer = tmp_path / "print.sh"
    printer.write_text("#!/bin/sh\ncat \"$0.data\"\n")
    printer.chmod(0o700)
    value = "\n".join(corpus())
    Path(f"{printer}.data").write_text(value)
    echo_back = ('{% for t in job.tasks if t.kind == "backup" %}printf \'%s\' "got: {{ t.output_tail }}"'
                 '{% endfor %}')
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "hostile", "repository": "R", "backup": str(printer),
                     "prune": {"command": echo_back}, "check": {"command": echo_back},
                     "post_hooks": [{"name": "report", "command": echo_back}]}])
    done = await run_cli("run", "hostile", "--timeout", "0", "--config", str(site.config))
    assert done.returncode == 0, done.stdout + done.stderr
    tails = {e["data"]["task"]["name"]: e["data"]["task"]["output_tail"] for e in spooled_events(site)
             if e["type"] == "backup.task.finished"}
    assert tails["backup"] == value
    assert tails["prune"] == tails["check"] == tails["report"] == f"got: {value}"


async def test_a_python_hook_reads_values_from_the_environment(site: Site) -> None:
    """What check-config tells a #!python hook to do instead of templating works."""
    script = "#!/usr/bin/env python3\nimport os\nprint('repo', os.environ['HOOKBUS_REPOSITORY'])\n"
    site.configure([jsonl_sub(site)])
    add_jobs(site, [{"name": "py", "repository": f"R$(touch {CANARY})", "backup": "true",
                     "post_hooks": [{"name": "py", "command": script}]}])
    done = await run_cli("run", "py", "--timeout", "0", "--config", str(site.config))
    assert done.returncode == 0, done.stdout + done.stderr
    hook = next(e for e in spooled_events(site) if e["type"] == "backup.task.finished"
                and e["data"]["task"]["name"] == "py")["data"]["task"]
    assert hook["output_tail"] == f"repo R$(touch {CANARY})\n"


async def test_a_template_error_dead_letters_at_once_and_the_job_goes_on(site: Site, procs: Any, tmp_path: Path) -> None:
    """A poison event (the template cannot render it) is not retried: the job's next event is not held behind it."""
    out = tmp_path / "out"
    site.configure([jsonl_sub(site), {
        "name": "hook", "kind": "shell", "events": ["backup.log"], "error_behavior": "ON_ERROR_RETRY_EXPONENTIAL_BACKOFF",
        "command": f"echo \"n: {{{{ 100 // (data.message | length - 1) }}}}\" >> {out}"}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    for message in ["x", "abc"]:  # 100 // 0, then 100 // 2
        done = await run_cli("emit", "backup.log", "--data", orjson.dumps({"job_id": "same", "message": message}).decode(),
                             "--source", "test://poison", "--config", str(site.config))
        assert done.returncode == 0, done.stderr
    await wait_for(lambda: out.exists() and out.read_text() == "n: 50\n", 20, "the second event's hook")
    audit = site.root / "audit.jsonl"
    failed = await wait_for(lambda: [e for e in read_jsonl(audit) if e["type"] == "hookbus.delivery.failed"], 20,
                            "the dead letter")
    assert failed[0]["data"]["attempts"] == 1 and "ZeroDivisionError" in failed[0]["data"]["error"]


async def test_odd_values_in_messages_are_sent_as_text_not_retried(site: Site, procs: Any, receiver: Receiver) -> None:
    """A duration that is not a number and a time past the year 9999 in UTC: the message still goes out, once,
    and the job's next event is not held behind it."""
    site.configure([jsonl_sub(site), {"name": "ops", "kind": "slack", "events": ["backup.job.finished", "backup.report"],
                                      "webhook_url": receiver.url, "group_wait": 0}])
    procs("serve", "--config", str(site.config))
    await wait_for(lambda: http_ready(site.url), 20, "hookbus serve to listen")
    odd = [cloudevent(1, type_="backup.job.finished", outcome="failed", repository="R", duration_s="abc"),
           cloudevent(2, type_="backup.report", total=2, ok=1, fail=1, duration_s="abc"),
           cloudevent(3, type_="backup.job.finished", outcome="success", repository="R")]
    odd[0]["time"] = odd[1]["time"] = "9999-12-31T23:59:59-23:59"
    async with aiohttp.ClientSession() as session:
        for body in odd:
            async with session.post(f"{site.url}/events", json=body) as answer:
                assert answer.status == 202, await answer.text()
    await wait_for(lambda: len(receiver.received) >= 3, 20, "three messages")
    texts = [r["body"]["text"] for r in receiver.received]
    assert "DURATION=abcs" in texts[1] and texts[2].startswith("✅")
    assert receiver.attempts == 3


# Templates a red-team review found to run event data, choose what runs or inject an option under the first,
# deny-list version of bus/shellvalues.py; V stands for the value. Each must now be refused.
ATTACKS = [
    'echo {% filter replace("X", data.v) %}X{% endfilter %}',
    'printf "%s\\n" V |& bash', 'printf "%s\\n" V |\nbash', 'printf "%s\\n" V | (bash)',
    '{ printf "%s" V; } | bash', "printf '%s' V | env bash", "printf '%s' V > >(bash)",
    "cat <<EOF | (bash)\nV\nEOF", 'eval "$(printf %s V)"', "source <(printf '%s' V)",
    'while read -r l; do eval "$l"; done <<EOF\nV\nEOF', "eval x &>/dev/null y=xV",
    "echo $[xV]", "for ((i=xV;0;)); do :; done", "time -p ((y=xV))", "time -p [[ xV -eq 1 ]]", "a=(x [xV]=1)",
    "declare -i n; n=xV", "printf -v V %s 1", "printf -v xV %s 1", "[ -v xV ]", "test -v xV", "read -r xV <<<1",
    "mapfile -C xV -c 1 arr <<<1", 'echo "$(case x in x) :;V;; esac)"', """: ${x:-"}"}; :;V '"'\\'""",
    "cat <<EOF; x=$(\nV\n)\nEOF", "bash <<$(x)\n$\n: xV\n$(x)", "export PATV; ls",
    "{fd}>/dev/null PATH=/tmp/xV ls", 'PATH=V ls', '#!/usr/bin/env -S bash -c "xV"',
    "tar -cf /tmp/x.tar --exclude -- V /etc/hostname", "grep -e -- V", 'python3.11 -c "0;V"',
    'printf "%s\\n" V | ed -s', 'flock /tmp/lock -c "echo V"', "env -SV", "time -p ./V", '"a"=xV', "coproc ./V",
    'curl --globoff -o "xV" https://h', 'logger -f "/var/xV"', 'tee "/tmp/xV"', 'printf x > "/tmp/xV"',
    'curl --globoff --data-urlencode "xV" https://h', "apprise --config=xV", "echo ${V}", "echo $V",
    'printf "%s" "a\\V"', "echo {a,xV}", "ntfy publish --file=xV t",
]


@pytest.mark.parametrize("template", ATTACKS)
def test_what_the_reviews_found_is_refused(template: str) -> None:
    for shell in ("/bin/bash", "/bin/sh"):
        with pytest.raises(TemplateError):
            render_shell(template.replace("V", "{{ data.v }}"), event(v=f";touch {CANARY};"), shell=shell)


def test_odd_whitespace_is_a_word_character_not_a_crash() -> None:
    bound = render_shell("printf '%s' \"a\u00a0{{ data.v }}\"\u2003", event(v="x"), shell="/bin/bash")
    assert bound.env == {"HOOKBUS_VALUE_1": "x"}


def test_curl_after_its_flags_gets_the_url() -> None:
    bound = render_shell('curl -fsS --globoff -m 10 "https://hc-ping.com/uuid{{ data.v }}"', event(v="/fail"),
                         shell="/bin/bash")
    assert bound.text == 'curl -fsS --globoff -m 10 "https://hc-ping.com/uuid${HOOKBUS_VALUE_1}"'
