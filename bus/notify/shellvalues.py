"""Template values in a shell command: passed by reference, never pasted in.

A command template is rendered with every `{{ … }}` value replaced by a marker
(bus/templates.py). `bind` then reads the rendered command and writes, where
each marker stood, a reference to an environment variable that holds the
value: `"${HOOKBUS_VALUE_1}"` in a bare word, `${HOOKBUS_VALUE_1}` inside double
quotes or an unquoted heredoc. The shell expands a variable once and never reads
what it holds as syntax.

That alone does not make a value safe everywhere: `bash -c`, `eval`, `ssh`,
`awk`, arithmetic, `[[ … ]]`, `printf -v`, `read`, a pipe into an interpreter
and many more read a value as code or as a name. So a command that carries
values is held to a small part of the shell language that is read here in full,
and anything outside it is refused (accept-list, not deny-list):

- simple commands joined by `;`, `&`, `&&`, `||`, `|` and newlines, with
  redirections (not `&>`, which sh reads as `&` then `>`) and heredocs; no
  subshells, groups, compound commands (`if`, `for`, `case`, …), command
  substitution, backticks, arithmetic, `${…}` with operators, or commands that
  change what a name runs (`alias`, `eval`, `source`, `exec`, `PATH=`, …)
  (write the logic with `{% if %}` in the template);
- a value is an argument only of a command in DATA_COMMANDS, named as a bare
  word, positional or after one of the options listed for it, and reaches stdin
  (a pipe, a heredoc, `<<<`) only of DATA_READERS;
- a value never starts a word: the word begins with fixed text that is not an
  option (`"subject: {{ … }}"`, `https://host/…{{ … }}`), so no value can be an
  option (printf's arguments after its format are the exception); no unquoted
  `$VAR`, `"$@"`, glob or brace stands in or before its word, where it could
  split the value off or move it;
- no value in a command name, an assignment, a redirection's file, single
  quotes, a quoted heredoc, a `#!` line or a comment; the shell is sh, bash,
  dash or ash.

Commands without values are not read at all: they are the config author's.
The same reading runs for `check-config` (on sample events) and for every real
event, so a template that branches on event data is held to it as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath

__all__ = [
    "DATA_COMMANDS",
    "DATA_READERS",
    "MARK",
    "VALUE_PREFIX",
    "BoundCommand",
    "UnsafeTemplate",
    "bind",
    "reads_as_shell",
]

MARK = "\x00"  # a marker is MARK + index + MARK; a config cannot hold NUL in a command
VALUE_PREFIX = "HOOKBUS_VALUE_"
_MARKER = re.compile("\x00(\\d+)\x00")

# Shells whose grammar is read here (zsh, ksh and busybox differ in ways that matter: `>!`, `=cmd`, applets).
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ash"})
# Commands that take their arguments as data, and the options whose argument a
# value may be (None: every argument is data). Anything else (a file to read or
# write, a config, a command to run) could be chosen by the value.
DATA_COMMANDS: dict[str, frozenset[str] | None] = {
    "printf": None,  # after its format
    "echo": None,
    "curl": frozenset({"-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--data-urlencode", "--json",
                       "--form-string"}),
    "logger": frozenset({"-t", "--tag"}),
    "notify-send": frozenset({"-a", "--app-name"}),
    "ntfy": frozenset({"-t", "--title", "-m", "--message", "--tags", "-p", "--priority"}),
    "apprise": frozenset({"-b", "--body", "-t", "--title"}),
    "wall": frozenset(),
}
# Commands that read stdin as data: a value may reach them through a pipe or a heredoc.
DATA_READERS = frozenset({"cat", "tee", "logger", "wall", "apprise"})
# Commands that change how later names resolve or what the shell does: none may stand in a command with values.
_REDEFINERS = frozenset({"alias", "unalias", "eval", ".", "source", "enable", "hash", "shopt", "trap", "exec",
                         "command", "builtin", "declare", "typeset", "readonly", "local", "unset", "function"})
# `set` with these only: errors, unset names, tracing, no globbing (not -k, which turns arguments into assignments).
_SAFE_SET = re.compile(r"[-+][euxvfo]+|pipefail|errexit|nounset|xtrace|verbose|noglob")
_RESOLUTION_VARIABLES = re.compile(r"(PATH|ENV|BASH_ENV|CDPATH|IFS|SHELLOPTS|BASHOPTS|BASH_ALIASES|BASH_CMDS)\+?=")
# curl's flags that take no argument, so a word after them is a URL.
_CURL_FLAGS = re.compile(r"-[fsSLgkvqI]+|--(globoff|silent|show-error|fail|fail-with-body|location|insecure|verbose)")
_CURL_URL = re.compile(r"https?://[^/@\s]+/")
_COMPOUND = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
                       "in", "function", "select", "coproc", "time", "!", "{", "}", "[[", "]]"})
_LITERAL = re.compile(r"[^ \t\n;&|<>()$`\"'\\\x00]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_REDIRECT = re.compile(r"(\d*)(<<<|<<-|<<|>>|>&|<&|>\||<>|>|<)|&>>|&>")
_DELIMITER = re.compile(r"""'([A-Za-z0-9_]+)'|"([A-Za-z0-9_]+)"|\\?([A-Za-z0-9_]+)""")

_LOGIC = "write the logic with {% if %} … {% endif %} in the template, or pass the value in the environment " \
         "($HOOKBUS_SUBJECT, $HOOKBUS_JOB, …) to a script"


class UnsafeTemplate(ValueError):
    """A template puts a value where hookbus cannot show it is safe."""


@dataclass(frozen=True, slots=True)
class BoundCommand:
    """A rendered command and the variables its value references need."""

    text: str
    env: dict[str, str]


def reads_as_shell(command: str, shell: str) -> bool:
    """Whether a command runs under a POSIX shell: its `#!` interpreter, else `shell`."""
    stripped = command.lstrip()
    if stripped.startswith("#!"):
        words = stripped.split("\n", 1)[0][2:].split()
        if words and PurePath(words[0]).name == "env":  # `#!/usr/bin/env bash`
            words = [w for w in words[1:] if not w.startswith("-")]
        return bool(words) and PurePath(words[0]).name in POSIX_SHELLS
    words = shell.split()
    return bool(words) and PurePath(words[0]).name in POSIX_SHELLS


def bind(rendered: str, values: list[str], shell: str) -> BoundCommand:
    """Given a command rendered with markers and the values they stand for,
    return the command with variable references and the variables; raise
    UnsafeTemplate saying where a value cannot go and what to write instead."""
    if not values:
        return BoundCommand(rendered, {})
    for index, value in enumerate(values, 1):
        if MARK in value:
            raise UnsafeTemplate(f"value {index} holds a NUL byte (or template text built by a macro or a "
                                 "{% set %} block), which no command argument can carry")
    stripped = rendered.lstrip()
    if stripped.startswith("#!") and MARK in stripped.split("\n", 1)[0]:
        raise UnsafeTemplate("a {{ … }} value is in the #! line; name the interpreter in the template")
    if not reads_as_shell(rendered, shell):
        raise UnsafeTemplate(
            "this command's interpreter is not a POSIX shell, so a {{ … }} value cannot be put in it safely: "
            "read the event from the environment (HOOKBUS_JOB, HOOKBUS_SUBJECT, HOOKBUS_EVENT_TYPE, …) "
            "or, for `shell` subscribers, as JSON on stdin")
    scanner = _Scanner(rendered)
    scanner.script()
    return BoundCommand("".join(scanner.out), {f"{VALUE_PREFIX}{i}": v for i, v in enumerate(values, 1)})


def _ref(index: int, quoted: bool) -> str:
    return f"${{{VALUE_PREFIX}{index}}}" if quoted else f"\"${{{VALUE_PREFIX}{index}}}\""


@dataclass(slots=True)
class _Word:
    source_start: int
    lead: str = ""  # the fixed text the word starts with, up to its first expansion or value
    fixed: bool = True  # no expansion or value yet: `lead` is still growing
    text: str = ""  # all its literal text
    values: int = 0
    brace: bool = False  # an unquoted { or }: brace expansion could split it
    glob: bool = False  # an unquoted * ? [: pathname expansion could replace it
    unstable: bool = False  # an unquoted expansion, or "$@": it may split into words or vanish

    def literal(self, chars: str, quoted: bool = False) -> None:
        self.text += chars
        if self.fixed:
            self.lead += chars
        if not quoted:
            self.brace = self.brace or "{" in chars or "}" in chars
            self.glob = self.glob or any(c in chars for c in "*?[")

    def dynamic(self) -> None:
        self.fixed = False


@dataclass(slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool
    readers: list[str] = field(default_factory=list)  # its command, then the rest of its pipeline


@dataclass(slots=True)
class _Command:
    words: list[_Word] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # each word's source text
    targets: list[_Word] = field(default_factory=list)  # redirection targets
    stdin_values: bool = False  # a here-string with a value
    heredocs: list[_Heredoc] = field(default_factory=list)

    def name(self) -> str:
        for word, source in zip(self.words, self.sources, strict=True):
            if not _ASSIGNMENT.match(source):
                return PurePath(word.text).name if word.fixed else ""
        return ""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.src = text
        self.i = 0
        self.out: list[str] = []
        self.pending: list[_Heredoc] = []

    # -- reading ----------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.src[j] if j < len(self.src) else ""

    def take(self, n: int = 1) -> str:
        chunk = self.src[self.i:self.i + n]
        self.i += n
        self.out.append(chunk)
        return chunk

    def marker(self) -> int | None:
        found = _MARKER.match(self.src, self.i)
        if found is None:
            return None
        self.i = found.end()
        return int(found.group(1))

    def where(self) -> str:
        start = self.src.rfind("\n", 0, min(self.i, len(self.src) - 1)) + 1
        end = self.src.find("\n", self.i)
        line = self.src[start:end if end >= 0 else len(self.src)]
        return _MARKER.sub("{{…}}", line).strip()

    def refuse(self, what: str, instead: str) -> UnsafeTemplate:
        return UnsafeTemplate(f"{what}, in: {self.where()!r}; {instead}")

    # -- the script: pipelines of simple commands -----------------------------------------

    def script(self) -> None:
        pipeline: list[_Command] = []
        cmd = _Command()
        while self.i < len(self.src):
            c = self.peek()
            if c in " \t":
                self.take()
            elif c == "\\" and self.peek(1) == "\n":
                self.take(2)
            elif c == "\n":
                self._end_pipeline(pipeline, cmd)
                pipeline, cmd = [], _Command()
                self.take()
                self._bodies()
            elif c == "#":
                if pipeline and not cmd.words:
                    raise self.refuse("a comment right after a pipe", "keep a pipeline on one line")
                self._comment()
            elif c == "|" and self.peek(1) not in ("|", "&"):
                if self.src[self.i + 1:].lstrip(" \t").startswith("\n") or not self.src[self.i + 1:].strip():
                    raise self.refuse("a pipe at the end of a line", "keep a pipeline on one line")
                pipeline.append(cmd)
                cmd = _Command()
                self.take()
            elif c in ";&|" and not self.src.startswith("&>", self.i):
                operator = self.src[self.i:self.i + 2]
                if operator in (";;", ";&", "|&"):
                    raise self.refuse(f"`{operator}` is outside what hookbus reads around a value", _LOGIC)
                self._end_pipeline(pipeline, cmd)
                pipeline, cmd = [], _Command()
                self.take(2 if operator in ("&&", "||") else 1)
            elif c in "()":
                raise self.refuse("a subshell or group `( … )` is outside what hookbus reads around a value", _LOGIC)
            elif (redirect := _REDIRECT.match(self.src, self.i)) is not None:
                if redirect.group(0).startswith("&>"):
                    raise self.refuse("`&>` means one thing to bash and another to sh", "write >file 2>&1")
                self._redirection(cmd, redirect.group(0))
            else:
                start = self.i
                word = self._word()
                cmd.words.append(word)
                cmd.sources.append(self.src[start:self.i])
        self._end_pipeline(pipeline, cmd)
        self._bodies()

    def _comment(self) -> None:
        end = self.src.find("\n", self.i)
        end = len(self.src) if end < 0 else end
        if MARK in self.src[self.i:end]:
            raise self.refuse("a {{ … }} value is in a comment", "leave it out of the comment")
        self.take(end - self.i)

    def _end_pipeline(self, pipeline: list[_Command], last: _Command) -> None:
        commands = [*pipeline, last] if last.words or last.targets or last.heredocs else pipeline
        names = [c.name() for c in commands]
        carrying = False  # a value flows down the pipe from here on
        for position, cmd in enumerate(commands):
            self._check_command(cmd)
            if carrying and names[position] not in DATA_READERS:
                raise self.refuse(f"a {{{{ … }}}} value goes through a pipe into {names[position] or 'a command'!r}, "
                                  f"which is not among the commands that read stdin as data "
                                  f"({', '.join(sorted(DATA_READERS))})", _LOGIC)
            carrying = carrying or any(w.values for w in cmd.words) or cmd.stdin_values
            for heredoc in cmd.heredocs:
                heredoc.readers = names[position:]

    def _check_command(self, cmd: _Command) -> None:
        name, name_index = cmd.name(), None
        for index, (word, source) in enumerate(zip(cmd.words, cmd.sources, strict=True)):
            if name_index is None and _ASSIGNMENT.match(source):
                if word.values:
                    raise self.refuse("a {{ … }} value is assigned to a variable",
                                      "pass it as an argument of a command that takes data")
                if _RESOLUTION_VARIABLES.match(source):
                    raise self.refuse(f"{source.split('=')[0]} is set in a command that carries values, which "
                                      "could change what runs", "set it outside the template (Environment= in "
                                      "the service, or the subscriber's `env`)")
                continue
            if name_index is None:
                name_index = index
                if word.values:
                    raise self.refuse("a {{ … }} value would be (part of) the name of the command to run",
                                      "name the command in the template and pass the value as an argument")
                if word.fixed and word.text in _COMPOUND | _REDEFINERS:
                    raise self.refuse(f"`{word.text}` is outside what hookbus reads around a value", _LOGIC)
                if word.fixed and word.text in ("set", "export"):
                    self._check_settings(word.text, cmd.words[index + 1:])
            elif word.values:
                self._check_argument(cmd, name, name_index, index)
        for target in cmd.targets:
            if target.values:
                raise self.refuse("a {{ … }} value is in the name of a file to redirect to, where it could "
                                  "choose any file", "write the file name in the template")
        if cmd.stdin_values and name not in DATA_READERS:
            raise self.refuse(f"a {{{{ … }}}} value is fed to {name or 'a command'!r} on stdin, which is not among "
                              f"the commands that read stdin as data ({', '.join(sorted(DATA_READERS))})", _LOGIC)

    def _check_settings(self, name: str, args: list[_Word]) -> None:
        """`set -euo pipefail` and `export LANG=C` are fine beside values; what changes how names resolve is not."""
        for arg in args:
            text = arg.text if arg.fixed else ""
            ok = _SAFE_SET.fullmatch(text) if name == "set" else (
                arg.fixed and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(=.*)?", text, re.S)
                and not _RESOLUTION_VARIABLES.match(text + "=") and not text.startswith(("BASH_FUNC", "ENV")))
            if not ok:
                raise self.refuse(f"`{name} {text or '…'}` is outside what hookbus reads around a value", _LOGIC)

    def _check_argument(self, cmd: _Command, name: str, name_index: int, index: int) -> None:
        """A value may be an argument of a data command: positional, or the argument of one of its data
        options, and never at the start of its word."""
        name_word = cmd.words[name_index]
        if name not in DATA_COMMANDS or "/" in name_word.text or not name_word.fixed:
            raise self.refuse(
                f"a {{{{ … }}}} value is an argument of {name or 'a command named by a variable'!r}, which hookbus "
                f"does not know to take its arguments as data (it does for {', '.join(sorted(DATA_COMMANDS))})",
                _LOGIC)
        word = cmd.words[index]
        if word.unstable or word.glob or any(w.unstable for w in cmd.words[name_index:index]):
            raise self.refuse("a {{ … }} value is in or after a word with an unquoted $expansion or glob, which can "
                              "split, vanish or match files and move the value to another argument",
                              "quote the expansion: \"$VAR\"")
        texts = [w.text if w.fixed else "" for w in cmd.words]
        if name == "printf":
            if not self._after_format(texts, name_index, index):
                raise self.refuse("a {{ … }} value is printf's format or -v name", "printf '%s\n' \"{{ … }}\"")
            return
        options = DATA_COMMANDS[name]
        previous = texts[index - 1] if index - 1 > name_index else ""
        flag = name == "curl" and _CURL_FLAGS.fullmatch(previous) is not None
        if options is not None and previous.startswith("-") and previous != "--" and previous not in options \
                and not flag:
            raise self.refuse(f"a {{{{ … }}}} value is the argument of {name} {previous}, which could use it as "
                              f"a file or a setting", f"give it to one of {', '.join(sorted(options)) or 'none'}, or "
                              "as a plain argument")
        if name == "curl":
            self._check_curl(texts, previous if not flag else "", word)
        self._check_start(word, f"an argument of {name!r}", options)

    def _check_start(self, word: _Word, what: str, options: frozenset[str] | None) -> None:
        """A value must follow fixed text that is not an option, so it can never be read as one."""
        lead = word.lead
        if word.brace:
            raise self.refuse("a {{ … }} value is in a word with { or }, which brace expansion can split",
                              "quote the braces: \"{…}\"")
        if not lead:
            raise self.refuse(
                f"a {{{{ … }}}} value starts {what}, where a value beginning with '-' would be read as an option",
                "give the word a fixed start: \"subject: {{ … }}\", https://…/{{ … }}, or print it with "
                "printf '%s\\n' \"{{ … }}\"")
        if lead.startswith("-") and (options is None or lead.split("=", 1)[0] not in options or "=" not in lead):
            raise self.refuse(f"a {{{{ … }}}} value completes the option {lead!r}, so it could choose the option "
                              "or what it reads", "write the option and the value as two words, with fixed text "
                              "before the value")

    @staticmethod
    def _after_format(texts: list[str], name_index: int, index: int) -> bool:
        """Whether word `index` of a printf comes after its format (printf reads no options there)."""
        position = name_index + 1
        while position < index:
            if texts[position] == "-v":
                position += 2
            elif texts[position] == "--" or texts[position].startswith("-"):
                position += 1  # `-vname`, or an option printf will refuse
            else:
                return True  # position is the format
        return False

    def _check_curl(self, texts: list[str], previous: str, word: _Word) -> None:
        if "-g" not in texts and "--globoff" not in texts:
            raise self.refuse("a {{ … }} value is an argument of curl without --globoff, so [ ] and { } in it "
                              "would make curl send many requests", "add --globoff")
        if (not previous.startswith("-") or previous == "--") and not _CURL_URL.match(word.lead):
            raise self.refuse("a {{ … }} value is in curl's URL before its path, where it could choose the scheme "
                              "or the host", "write the URL up to its path in the template: "
                              "https://host/…{{ … }}")
        if previous == "--data-urlencode" and "=" not in word.lead:
            raise self.refuse("a {{ … }} value is in --data-urlencode without a name=, where a @ in it reads a file",
                              "write --data-urlencode \"name={{ … }}\"")

    # -- redirections and heredocs -----------------------------------------------------------

    def _redirection(self, cmd: _Command, operator: str) -> None:
        self.take(len(operator))
        while self.peek() in (" ", "\t") and self.peek():
            self.take()
        kind = operator.lstrip("0123456789")
        if kind in ("<<", "<<-"):
            self._heredoc_operator(cmd, strip=kind == "<<-")
            return
        if not self.peek() or self.peek() in "\n;&|()<>":
            raise self.refuse(f"the redirection `{operator}` has no target", "name its file")
        target = self._word()
        if kind == "<<<":
            cmd.stdin_values = cmd.stdin_values or bool(target.values)
        else:
            cmd.targets.append(target)

    def _heredoc_operator(self, cmd: _Command, strip: bool) -> None:
        found = _DELIMITER.match(self.src, self.i)
        after = found.end() if found else self.i
        if found is None or (after < len(self.src) and self.src[after] not in " \t\n;&|<>"):
            raise self.refuse("a heredoc's delimiter is not a plain word", "write <<EOF or <<'EOF'")
        delimiter = found.group(1) or found.group(2) or found.group(3)
        quoted = found.group(3) is None or found.group(0).startswith("\\")
        self.take(after - self.i)
        heredoc = _Heredoc(delimiter, quoted, strip)
        self.pending.append(heredoc)
        cmd.heredocs.append(heredoc)

    def _bodies(self) -> None:
        pending, self.pending = self.pending, []
        for heredoc in pending:
            self._body(heredoc)

    def _body(self, heredoc: _Heredoc) -> None:
        while self.i < len(self.src):
            end = self.src.find("\n", self.i)
            end = len(self.src) if end < 0 else end
            line = self.src[self.i:end]
            if (line.lstrip("\t") if heredoc.strip_tabs else line) == heredoc.delimiter:
                self.take(min(end + 1, len(self.src)) - self.i)
                return
            if MARK in line:
                if heredoc.quoted:
                    raise self.refuse("a {{ … }} value is in a quoted heredoc (<<'EOF'), where it would not be "
                                      "expanded", "write <<EOF")
                reader = heredoc.readers[0] if heredoc.readers else ""
                if any(name not in DATA_READERS for name in heredoc.readers) or not heredoc.readers:
                    raise self.refuse(f"a {{{{ … }}}} value is in a heredoc read by {reader or 'a command'!r} (or "
                                      f"piped on), which is not among the commands that read stdin as data "
                                      f"({', '.join(sorted(DATA_READERS))})", _LOGIC)
            if heredoc.quoted:
                self.take(min(end + 1, len(self.src)) - self.i)
                continue
            if line.endswith("\\"):
                raise self.refuse("a heredoc line ends with a backslash", "remove it")
            self._expanding(_Word(self.i), until="\n")
            if self.peek() == "\n":
                self.take()

    # -- words -----------------------------------------------------------------------------

    def _word(self) -> _Word:
        word = _Word(self.i)
        while self.i < len(self.src):
            c = self.peek()
            if c in " \t\n;&|()<>":
                break
            if c == MARK:
                self._value(word, quoted=False)
            elif c == "\\":
                if self.peek(1) == "\n":
                    self.take(2)
                    continue
                if self.peek(1) == MARK or not self.peek(1):
                    raise self.refuse("a backslash stands before a {{ … }} value", "remove it")
                self.take()
                word.literal(self.take(), quoted=True)
            elif c == "'":
                self._single_quotes(word)
            elif c == '"':
                self.take()
                self._expanding(word, until='"')
                self.take()
            elif c == "$":
                self._dollar(word, quoted=False)
            elif c == "`":
                raise self.refuse("backticks are outside what hookbus reads around a value", _LOGIC)
            else:
                run = _LITERAL.match(self.src, self.i)
                assert run is not None
                word.literal(self.take(run.end() - self.i))
        return word

    def _value(self, word: _Word, quoted: bool) -> None:
        if self.out and self.out[-1].endswith("$"):
            raise self.refuse("a `$` stands right before a {{ … }} value", "remove the `$`")
        index = self.marker()
        assert index is not None
        word.values += 1
        word.dynamic()
        self.out.append(_ref(index, quoted))

    def _single_quotes(self, word: _Word) -> None:
        close = self.src.find("'", self.i + 1)
        if close < 0:
            raise self.refuse("a single quote is not closed", "close it")
        inside = self.src[self.i + 1:close]
        if MARK in inside:
            raise self.refuse("a {{ … }} value is inside single quotes, where it would not be expanded",
                              "use double quotes: \"… {{ … }} …\"")
        self.take(close + 1 - self.i)
        word.literal(inside, quoted=True)

    def _dollar(self, word: _Word, quoted: bool) -> None:
        nxt = self.peek(1)
        if nxt == "{":
            close = self.src.find("}", self.i + 2)
            name = self.src[self.i + 2:close] if close > 0 else ""
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+", name):
                raise self.refuse("`${…}` with an operator is outside what hookbus reads around a value", _LOGIC)
            self.take(close + 1 - self.i)
            word.dynamic()
            word.unstable = word.unstable or not quoted
        elif nxt in ("(", "[") or (nxt in ("'", '"') and not quoted):
            raise self.refuse(f"`${nxt}` is outside what hookbus reads around a value", _LOGIC)
        elif (plain := _NAME.match(self.src, self.i + 1)) is not None:
            self.take(plain.end() - self.i)
            word.dynamic()
            word.unstable = word.unstable or not quoted or plain.group(0) in "@*"
        else:
            word.literal(self.take(), quoted)  # a lone `$` is itself

    def _expanding(self, word: _Word, until: str) -> None:
        """Double-quoted text (until `"`) or an unquoted heredoc's line (until a newline)."""
        while self.i < len(self.src) and self.peek() != until:
            c = self.peek()
            if c == MARK:
                self._value(word, quoted=True)
            elif c == "\\":
                nxt = self.peek(1)
                if nxt == MARK or not nxt:
                    raise self.refuse("a backslash stands before a {{ … }} value", "remove it")
                if nxt in "$`\"\\\n" and not (until == "\n" and nxt in '"\n'):
                    self.take(2)
                    word.literal(nxt if nxt != "\n" else "", quoted=True)
                else:
                    word.literal(self.take(), quoted=True)
            elif c == "$":
                self._dollar(word, quoted=True)
            elif c == "`":
                raise self.refuse("backticks are outside what hookbus reads around a value", _LOGIC)
            else:
                word.literal(self.take(), quoted=True)
