"""Template values in a shell command: passed by reference, never pasted in.

A command template is rendered with every `{{ … }}` value replaced by a marker
(bus/templates.py). `bind` then reads the rendered command as the shell will,
finds the context of each marker, and writes a reference to an environment
variable there: `"${HOOKBUS_VALUE_1}"` in a bare word, `${HOOKBUS_VALUE_1}` inside
double quotes or an unquoted heredoc. The shell expands a variable once and never
reads its value as syntax, so whatever the event holds reaches the command as
exactly one string. Where no reference can be safe, the template is refused
with what to write instead: inside single quotes, backticks, `${…}`, arithmetic,
`[[ … ]]`, a quoted heredoc, a word that names the command, a command that runs
its arguments as code (`bash -c`, `eval`, `ssh`, `awk`, …, or a pipe into one),
the body of a `#!` script in another language, and the start of an argument,
where a value beginning with `-` would be read as an option (unless `--` came
before it in the command).

The same reading runs for `check-config` (against sample events) and for every
real event, so a template that branches on event data is held to it as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath

__all__ = ["BoundCommand", "UnsafeTemplate", "MARK", "bind", "reads_as_shell", "VALUE_PREFIX"]

MARK = "\x00"  # markers are MARK + index + MARK; a config cannot hold NUL in a command
VALUE_PREFIX = "HOOKBUS_VALUE_"
_MARKER = re.compile("\x00(\\d+)\x00")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")

# Shells whose grammar this module reads (the POSIX family).
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"})
# Commands that run (part of) their arguments or input as code.
EVALUATORS = frozenset({
    "eval", "source", ".", "trap", "sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "fish", "csh", "tcsh",
    "busybox", "ssh", "su", "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua",
    "tclsh", "Rscript", "awk", "gawk", "mawk", "nawk", "sed", "xargs", "parallel", "watch", "at", "batch",
    "let", "declare", "typeset", "local",  # -i: the value is evaluated as arithmetic, which can run commands
})
# Commands whose arguments name another command to run.
WRAPPERS = frozenset({
    "sudo", "doas", "env", "nice", "nohup", "timeout", "exec", "command", "builtin", "stdbuf", "ionice", "chroot",
    "setsid", "time", "runuser", "flock", "strace", "chrt", "taskset", "unshare", "nsenter", "systemd-run",
})
# Variables whose value decides what runs or how the shell reads code.
_CODE_VARIABLES = re.compile(r"(PATH|IFS|ENV|BASH_ENV|PS4|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|CDPATH|GLOBIGNORE|"
                             r"(LD|DYLD|NODE|GIT)_\w*|(PYTHON|PERL5|RUBY|BASH_FUNC)\w*)\+?=")
# Reserved words after which the next word is again a command name.
_KEEPS_COMMAND = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "}", "fi",
                            "done", "esac"})


class UnsafeTemplate(ValueError):
    """A template puts a value where no reference to it can be safe."""


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
        if not words:
            return False
        name = PurePath(words[0]).name
        if name == "env":  # `#!/usr/bin/env bash`
            rest = [w for w in words[1:] if not w.startswith("-")]
            name = PurePath(rest[0]).name if rest else ""
        return name in POSIX_SHELLS
    return PurePath(shell.split()[0] if shell.split() else shell).name in POSIX_SHELLS


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
    if not reads_as_shell(rendered, shell):
        raise UnsafeTemplate(
            "this command's interpreter is not a POSIX shell, so a {{ … }} value cannot be put in it safely: "
            "read the event from the environment (HOOKBUS_JOB, HOOKBUS_SUBJECT, HOOKBUS_EVENT_TYPE, …) "
            "or, for `shell` subscribers, as JSON on stdin")
    scanner = _Scanner(rendered)
    scanner.command(end=None)
    scanner.finish()
    return BoundCommand("".join(scanner.out), {f"{VALUE_PREFIX}{i}": v for i, v in enumerate(values, 1)})


def _ref(index: int, quoted: bool) -> str:
    return f"${{{VALUE_PREFIX}{index}}}" if quoted else f"\"${{{VALUE_PREFIX}{index}}}\""


@dataclass(slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool
    readers: list[str] = field(default_factory=list)  # the commands of its pipeline


@dataclass(slots=True)
class _Simple:
    """What is known of the simple command (and its pipeline) being read."""

    words: list[str] = field(default_factory=list)  # its words so far, assignments and redirections left out
    pipeline: list[str] = field(default_factory=list)  # command names of the pipeline so far
    values_in_pipeline: bool = False
    heredocs: list[_Heredoc] = field(default_factory=list)  # opened in this pipeline
    dashdash: bool = False
    in_test: bool = False  # inside [[ … ]]
    # the word being read
    started: bool = False
    text: list[str] = field(default_factory=list)  # its literal characters
    redirect_target: bool = False

    @property
    def name(self) -> str:
        return PurePath(self.words[0]).name if self.words else ""

    def at_command(self) -> bool:
        return not self.words

    def new_command(self) -> None:
        if self.words:
            self.pipeline.append(self.name)
        self.words, self.dashdash = [], False


class _Scanner:
    def __init__(self, text: str) -> None:
        self.src = text
        self.i = 0
        self.out: list[str] = []
        self.heredocs: list[_Heredoc] = []  # read after the line that opens them

    # -- helpers ------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.src[j] if j < len(self.src) else ""

    def take(self, n: int = 1) -> str:
        chunk = self.src[self.i:self.i + n]
        self.i += n
        self.out.append(chunk)
        return chunk

    def marker(self) -> int | None:
        """The index of a marker starting here (and step over it), else None."""
        found = _MARKER.match(self.src, self.i)
        if found is None:
            return None
        self.i = found.end()
        return int(found.group(1))

    def where(self) -> str:
        """The line being read, values shown as {{…}}, for error messages."""
        start = self.src.rfind("\n", 0, self.i) + 1
        end = self.src.find("\n", self.i)
        line = self.src[start:end if end >= 0 else len(self.src)]
        return _MARKER.sub("{{…}}", line).strip()

    def refuse(self, why: str, instead: str) -> UnsafeTemplate:
        return UnsafeTemplate(f"a {{{{ … }}}} value {why}, in: {self.where()!r}; {instead}")

    def finish(self) -> None:
        if self.heredocs:
            self._bodies()

    # -- unquoted shell code --------------------------------------------------------

    def command(self, end: str | None) -> None:
        """Read shell code up to `end` (")" closing a `$(`) or the end of the text."""
        cmd = _Simple()
        depth = 0
        while self.i < len(self.src):
            c = self.peek()
            if c == MARK:
                self._value(cmd)
            elif c in " \t":
                self._end_word(cmd)
                self.take()
            elif c == "\n":
                self._end_word(cmd)
                self._end_pipeline(cmd)
                self.take()
                if self.heredocs:
                    self._bodies()
            elif c == ")" and end == ")" and depth == 0:
                self._end_word(cmd)
                self._end_pipeline(cmd)
                return
            elif c in ";&|()":
                depth += self._operator(cmd, c)
            elif c in "<>":
                self._redirection(cmd)
            elif c == "#" and not cmd.started:
                self._comment()
            elif c == "\\":
                self._escape(cmd)
            elif c == "'":
                self._single_quotes(cmd, ansi=False)
            elif c == '"':
                cmd.started = True
                self.take()
                self._double_quotes(cmd)
            elif c == "`":
                cmd.started = True
                self._backticks()
            elif c == "$":
                cmd.started = True
                self._dollar(cmd)
            else:
                cmd.started = True
                cmd.text.append(c)
                self.take()
        self._end_word(cmd)
        self._end_pipeline(cmd)

    def _operator(self, cmd: _Simple, c: str) -> int:
        """Read one operator character; return how it changes the depth of parentheses."""
        self._end_word(cmd)
        if c == "(" and self.peek(1) == "(" and cmd.at_command():
            self._arithmetic("((", "))")
            return 0
        if c == "|" and self.peek(1) != "|":
            cmd.new_command()  # a pipe: the same pipeline goes on
        else:
            self._end_pipeline(cmd)
        self.take()
        return {"(": 1, ")": -1}.get(c, 0)

    def _end_pipeline(self, cmd: _Simple) -> None:
        cmd.new_command()
        for heredoc in cmd.heredocs:
            heredoc.readers = list(cmd.pipeline)
        cmd.heredocs = []
        if cmd.values_in_pipeline:
            runner = next((name for name in cmd.pipeline if name in EVALUATORS), None)
            if runner is not None:
                raise UnsafeTemplate(
                    f"a {{{{ … }}}} value goes through a pipe into {runner!r}, which runs its input as code; "
                    "pass the value in the environment or a file the command reads as data")
        cmd.pipeline, cmd.values_in_pipeline = [], False

    def _end_word(self, cmd: _Simple) -> None:
        if not cmd.started:
            return
        word = "".join(cmd.text)
        cmd.started, cmd.text = False, []
        if cmd.redirect_target:
            cmd.redirect_target = False
            return
        if cmd.at_command() and (word in _KEEPS_COMMAND or _ASSIGNMENT.match(word)):
            return
        if cmd.at_command() and word == "[[":
            cmd.in_test = True
            return
        if word == "]]" and cmd.in_test:
            cmd.in_test = False
            return
        if word == "--" and cmd.words:
            cmd.dashdash = True
        cmd.words.append(word)

    def _value(self, cmd: _Simple) -> None:
        index = self.marker()
        assert index is not None
        self._check_value(cmd)
        cmd.started = True
        cmd.values_in_pipeline = True
        self.out.append(_ref(index, quoted=False))

    def _check_value(self, cmd: _Simple) -> None:
        """Refuse a value where the command being read could take it as code, a name or an option."""
        if self.out and self.out[-1].endswith("$"):
            raise self.refuse("follows a `$`", "remove the `$`")
        if cmd.in_test:
            raise self.refuse("is inside [[ … ]], where -eq and friends evaluate it as arithmetic",
                              "test it in the template instead: {% if data.x == \"y\" %}…{% endif %}")
        runner = next((PurePath(w).name for w in cmd.words if PurePath(w).name in EVALUATORS), None)
        if runner is not None:
            raise self.refuse(f"is an argument of {runner!r}, which runs its arguments as code",
                              "pass the value in the environment or a file the command reads as data")
        if cmd.redirect_target:
            return
        word = "".join(cmd.text)
        if (cmd.at_command() or cmd.name in ("export", "readonly", "env")) and _CODE_VARIABLES.match(word):
            raise self.refuse(f"is assigned to {word.rstrip('+=')}, which decides what runs",
                              "assign it to a variable of your own")
        if cmd.at_command():
            if _ASSIGNMENT.match(word):
                return  # NAME={{ value }}: a variable's value
            raise self.refuse("would be (part of) the name of the command to run",
                              "name the command in the template and pass the value as an argument")
        if cmd.text:
            return  # inside a word that starts with fixed text: never an option
        if cmd.name in WRAPPERS:
            raise self.refuse(f"starts an argument of {cmd.name!r}, which could take it as the command to run",
                              "give the word a fixed start, e.g. --name={{ … }}")
        if cmd.dashdash or (cmd.name == "printf" and len(cmd.words) > 1):
            return
        raise self.refuse(
            f"starts an argument of {cmd.name!r}, where a value beginning with '-' would be read as an option",
            "put `--` before it (`git log -- {{ … }}`), write it inside an option (`--name={{ … }}`, "
            "`-m{{ … }}`) or after fixed text (`\"subject: {{ … }}\"`), or print it with "
            "`printf '%s\\n' {{ … }}`")

    def _redirection(self, cmd: _Simple) -> None:
        word = "".join(cmd.text)
        if cmd.started and not word.isdigit():
            self._end_word(cmd)
        elif cmd.started:  # `2>`: the digits are the descriptor, not a word
            cmd.started, cmd.text = False, []
        c = self.peek()
        if self.peek(1) == "(":  # process substitution <(…) / >(…)
            self.take(2)
            self.command(end=")")
            self.take()
            cmd.started = True
            return
        if c == "<" and self.peek(1) == "<" and self.peek(2) != "<":
            self._heredoc_operator(cmd)
            return
        self.take()
        while self.peek() in ("<", ">", "&", "|") and self.peek():
            self.take()
        cmd.redirect_target = True

    def _heredoc_operator(self, cmd: _Simple) -> None:
        self.take(2)
        strip = self.peek() == "-"
        if strip:
            self.take()
        while self.peek() in (" ", "\t") and self.peek():
            self.take()
        delimiter: list[str] = []
        quoted = False
        while self.i < len(self.src) and self.peek() not in " \t\n;&|<>()":
            c = self.peek()
            if c == MARK:
                raise self.refuse("is a heredoc's delimiter", "write the delimiter in the template")
            if c in "'\"":
                quoted = True
                close = self.src.find(c, self.i + 1)
                close = len(self.src) if close < 0 else close
                delimiter.append(self.src[self.i + 1:close])
                self.take(close + 1 - self.i)
            elif c == "\\":
                quoted = True
                self.take()
                delimiter.append(self.take())
            else:
                delimiter.append(self.take())
        heredoc = _Heredoc("".join(delimiter), quoted, strip)
        self.heredocs.append(heredoc)
        cmd.heredocs.append(heredoc)

    def _bodies(self) -> None:
        pending, self.heredocs = self.heredocs, []
        for heredoc in pending:
            self._body(heredoc)

    def _body(self, heredoc: _Heredoc) -> None:
        while self.i < len(self.src):
            end = self.src.find("\n", self.i)
            end = len(self.src) if end < 0 else end
            line = self.src[self.i:end]
            if (line.lstrip("\t") if heredoc.strip_tabs else line) == heredoc.delimiter:
                self.take(end - self.i)
                if self.peek() == "\n":
                    self.take()
                return
            if heredoc.quoted:
                if MARK in line:
                    raise self.refuse("is inside a quoted heredoc (<<'EOF'), where it would not be expanded",
                                      "write the delimiter unquoted (<<EOF)")
                self.take(end + 1 - self.i)
            else:
                self._expanding(_Simple(), heredoc=heredoc)
                if self.peek() == "\n":
                    self.take()

    def _comment(self) -> None:
        while self.i < len(self.src) and self.peek() != "\n":
            index = self.marker()
            if index is None:
                self.take()
            else:
                self.out.append(_ref(index, quoted=True))

    def _escape(self, cmd: _Simple) -> None:
        self.take()
        if self.peek() == "\n":
            self.take()
            return
        if self.peek() == MARK:
            raise self.refuse("follows a backslash", "remove the backslash")
        cmd.started = True
        cmd.text.append(self.take())

    def _single_quotes(self, cmd: _Simple, ansi: bool) -> None:
        cmd.started = True
        self.take()
        while self.i < len(self.src):
            c = self.peek()
            if c == MARK:
                raise self.refuse("is inside single quotes, where it would not be expanded",
                                  "use double quotes: \"… {{ … }} …\"")
            if ansi and c == "\\":
                self.take(2)
                continue
            self.take()
            if c == "'":
                return
            cmd.text.append(c)

    def _backticks(self) -> None:
        self.take()
        while self.i < len(self.src):
            c = self.peek()
            if c == MARK:
                raise self.refuse("is inside backticks", "use $( … ) instead of backticks")
            self.take(2 if c == "\\" else 1)
            if c == "`":
                return

    def _dollar(self, cmd: _Simple | None) -> None:
        nxt = self.peek(1)
        if nxt == "(" and self.peek(2) == "(":
            self._arithmetic("$((", "))")
        elif nxt == "(":
            self.take(2)
            self.command(end=")")
            self.take()
        elif nxt == "{":
            self._braced()
        elif nxt == "'" and cmd is not None:
            self.take()
            self._single_quotes(cmd, ansi=True)
        elif nxt == '"' and cmd is not None:
            self.take(2)
            self._double_quotes(cmd)
        else:
            self.take()
            name = _NAME.match(self.src, self.i)
            if name is not None:
                self.take(name.end() - self.i)
            elif self.peek() and self.peek() in "@*#?$!-0123456789":
                self.take()

    def _braced(self) -> None:
        self.take(2)
        depth = 1
        while self.i < len(self.src) and depth:
            c = self.peek()
            if c == MARK:
                raise self.refuse("is inside ${…}", "refer to a variable set in the template: X={{ … }}; … \"$X\"")
            depth += {"{": 1, "}": -1}.get(c, 0)
            self.take(2 if c == "\\" else 1)

    def _arithmetic(self, opening: str, closing: str) -> None:
        self.take(len(opening))
        depth = 0
        while self.i < len(self.src):
            if self.peek() == MARK:
                raise self.refuse("is inside an arithmetic expression, which evaluates it",
                                  "compute in the template: {{ data.x | int }} outside (( ))")
            if depth == 0 and self.src.startswith(closing, self.i):
                self.take(len(closing))
                return
            depth += {"(": 1, ")": -1}.get(self.peek(), 0)
            self.take()

    # -- double quotes and heredoc bodies -------------------------------------------

    def _double_quotes(self, cmd: _Simple) -> None:
        self._expanding(cmd, heredoc=None)
        self.take()  # the closing quote

    def _expanding(self, cmd: _Simple, heredoc: _Heredoc | None) -> None:
        """Read text in which `$`, backticks and `\\` are special, up to a closing
        `"` (double quotes) or the end of the line (an unquoted heredoc's body)."""
        while self.i < len(self.src):
            c = self.peek()
            if (c == '"' and heredoc is None) or (c == "\n" and heredoc is not None):
                return
            if c == MARK:
                index = self.marker()
                assert index is not None
                if heredoc is None:
                    self._check_value(cmd)
                else:
                    self._check_heredoc_value(heredoc)
                cmd.values_in_pipeline = True
                self.out.append(_ref(index, quoted=True))
            elif c == "\\":
                if self.peek(1) == MARK:
                    raise self.refuse("follows a backslash", "remove the backslash")
                cmd.text.append(self.peek(1))
                self.take(2)
            elif c == "`":
                self._backticks()
            elif c == "$":
                self._dollar(None)
            else:
                cmd.text.append(c)
                self.take()

    def _check_heredoc_value(self, heredoc: _Heredoc) -> None:
        runner = next((name for name in heredoc.readers if name in EVALUATORS), None)
        if runner is not None:
            raise self.refuse(f"is in a heredoc read by {runner!r}, which runs it as code",
                              "pass the value in the environment and refer to it in a quoted heredoc")
