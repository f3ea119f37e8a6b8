"""Formula text -> Graph: a hand-written tokenizer and precedence (Pratt) parser, no eval.

Grammar: statements separated by ';' or newlines, each ``name = expr`` or a bare ``expr``; the
last statement is the output (a bare one is named ``f``). Operators and functions come from the op
table; every other name is an input variable.
"""
from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass

from .errors import FormulaSyntaxError, LimitError
from .ir import CONST, INPUT, Graph, GraphBuilder
from .ops import CONSTANTS, FUNCTIONS, INFIX_OPS, PREFIX_OPS


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile formulas from hanging or exhausting memory."""

    max_length: int = 100_000
    max_statements: int = 1_000
    max_depth: int = 200
    max_nodes: int = 100_000


# Operator symbols come from the op table, longest first so ** is not read as two *.
_SYMBOLS = sorted({*INFIX_OPS, *PREFIX_OPS}, key=lambda t: (-len(t), t))
_TOKEN = re.compile(
    r"(?P<space>[ \t\r]+)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>" + "|".join(map(re.escape, _SYMBOLS)) + r"|[(),;=\n])"
)

# Characters a Python programmer may try, each with the reason it is refused.
_REFUSED = {
    "'": "strings are not allowed", '"': "strings are not allowed",
    ".": "attribute access ('.') is not allowed",
    "[": "'[' is not allowed: no subscripts or list literals; give a tensor as an input value, "
         "e.g. --x \"[1.4, 2.7, 1.9]\"",
    "]": "']' is not allowed: no subscripts or list literals", "{": "braces are not allowed",
    "}": "braces are not allowed", ":": "':' is not allowed (no lambdas, slices or annotations)",
    "^": "'^' is not a power here; write a**b", "%": "'%' (modulo) is not supported", "#": "comments are not allowed",
    "\\": "backslashes are not allowed", "`": "backticks are not allowed",
}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, name, op, end
    text: str
    pos: int


def tokenize(src: str) -> list[_Tok]:
    """Split formula text into tokens, refusing anything that is not part of the language."""
    toks, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            ch = src[pos]
            if ch == "." and pos > 0 and (src[pos - 1].isalnum() or src[pos - 1] in "_)"):
                raise FormulaSyntaxError("attribute access ('.') is not allowed", src, pos)
            if ch in "<>!&|~":
                raise FormulaSyntaxError(f"operator {ch!r} is not supported; use + - * / **", src, pos)
            reason = _REFUSED.get(ch, f"unexpected character {ch!r}")
            raise FormulaSyntaxError(reason, src, pos)
        kind = m.lastgroup
        if kind == "name":
            word = m.group()
            if keyword.iskeyword(word):
                raise FormulaSyntaxError(
                    f"{word!r} is not allowed: formulas hold names, numbers, operators and calls",
                    src, pos)
            if word.startswith("__"):
                raise FormulaSyntaxError(f"names starting with '__' are not allowed ({word})", src, pos)
        if kind == "op" and src.startswith("//", pos):
            raise FormulaSyntaxError("'//' (floor division) is not supported", src, pos)
        if kind != "space":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(src)))
    return toks


def parse(src: str, limits: Limits = Limits()) -> Graph:
    """Parse formula text into a Graph, or raise FormulaSyntaxError / LimitError."""
    if len(src) > limits.max_length:
        raise LimitError(f"formula is {len(src):,} characters long; the limit is {limits.max_length:,}")
    return _Parser(src, limits).program()


class _Parser:
    def __init__(self, src: str, limits: Limits) -> None:
        self.src, self.limits = src, limits
        self.toks = tokenize(src)
        self.i = 0
        self.b = GraphBuilder(limits.max_nodes)
        self.names: dict[str, int] = {}  # every name in scope -> node index
        self.assigned: set[str] = set()
        self.constants_used: set[str] = set()  # constants read before any assignment shadows them

    # -- token helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Tok) -> FormulaSyntaxError:
        return FormulaSyntaxError(message, self.src, tok.pos)

    def expect(self, text: str) -> _Tok:
        tok = self.next()
        if tok.text != text:
            found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
            raise self.fail(f"expected {text!r} but found {found}", tok)
        return tok

    # -- statements
    def program(self) -> Graph:
        output, aliases, count = None, [], 0
        while self.peek().kind != "end":
            if self.peek().text in (";", "\n"):
                self.next()
                continue
            count += 1
            if count > self.limits.max_statements:
                raise LimitError(f"formula has more than {self.limits.max_statements:,} statements")
            output, alias = self.statement()
            if alias:
                aliases.append(alias)
            end = self.next()
            if end.kind != "end" and end.text not in (";", "\n"):
                raise self.fail(f"unexpected {end.text!r}; statements end with ';' or a new line", end)
            if end.kind == "end":
                break
        if output is None:
            raise FormulaSyntaxError("formula is empty", self.src, None)
        node = self.b.nodes[output]
        if not node.named:  # a bare expression: the output is called f
            name = "f" if "f" not in self.names else "out"
            self.b.rename(output, name)
        return self.b.build(output, self.src, tuple(aliases))

    def statement(self) -> tuple[int, tuple[str, int] | None]:
        first, second = self.toks[self.i], self.toks[self.i + 1]
        if not (first.kind == "name" and second.text == "="):
            return self.expr(0, 0), None
        name = first.text
        if name in FUNCTIONS:
            raise self.fail(f"cannot assign to {name!r}: it is a built-in function", first)
        if name in self.constants_used:  # from here on `e` would mean something else: refuse
            raise self.fail(f"{name!r} is assigned after it is used as the constant {name}", first)
        if name in self.assigned:
            raise self.fail(f"{name!r} is assigned twice", first)
        if name in self.names:
            raise self.fail(f"{name!r} is assigned after it is used as an input", first)
        self.i += 2
        i = self.expr(0, 0)
        if name in self.names:
            raise self.fail(f"{name!r} is used in its own definition", first)
        self.assigned.add(name)
        self.names[name] = i
        if self.b.nodes[i].named:  # f = q: one node, two names
            return i, (name, i)
        self.b.rename(i, name)
        return i, None

    # -- expressions
    def expr(self, min_bp: int, depth: int) -> int:
        if depth > self.limits.max_depth:
            raise LimitError(f"formula is nested more than {self.limits.max_depth} levels deep")
        left = self.atom(depth)
        while True:
            tok = self.peek()
            op = INFIX_OPS.get(tok.text) if tok.kind == "op" else None
            if op is None:
                if tok.kind in ("num", "name") or tok.text == "(":
                    raise self.fail(f"missing operator before {tok.text!r}", tok)
                return left
            if op.precedence <= min_bp:
                return left
            self.next()
            right = self.expr(op.precedence - 1 if op.right_assoc else op.precedence, depth + 1)
            left = self.b.add(op.name, (left, right))

    def atom(self, depth: int) -> int:
        tok = self.next()
        if tok.kind == "num":
            value = float(tok.text)
            if math.isinf(value):
                raise LimitError(f"number {tok.text[:20]} is too large for a float")
            return self.b.add(CONST, value=value)
        if tok.kind == "name":
            return self.name(tok, depth)
        if tok.text == "(":
            inner = self.expr(0, depth + 1)
            self.expect(")")
            return inner
        if tok.text == "+":
            return self.expr(PREFIX_OPS["-"].precedence, depth + 1)
        if tok.text in PREFIX_OPS:
            op = PREFIX_OPS[tok.text]
            start = len(self.b.nodes)
            operand = self.expr(op.precedence, depth + 1)
            node = self.b.nodes[operand]
            if node.op == CONST and not node.named and operand == start == len(self.b.nodes) - 1:
                self.b.nodes[operand] = type(node)(node.id, CONST, (), -node.value, False)
                return operand  # -2.5 is a number, not neg(2.5)
            return self.b.add(op.name, (operand,))
        found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
        raise self.fail(f"expected a number, a name or '(' but found {found}", tok)

    def name(self, tok: _Tok, depth: int) -> int:
        word = tok.text
        if self.peek().text == "(":
            op = FUNCTIONS.get(word)
            if op is None:
                known = ", ".join(sorted(FUNCTIONS))
                raise self.fail(f"unknown function {word!r} (known: {known})", tok)
            self.next()
            args = [self.expr(0, depth + 1)]
            while self.peek().text == ",":
                self.next()
                args.append(self.expr(0, depth + 1))
            if self.peek().text == "=":
                raise self.fail("keyword arguments are not allowed", self.peek())
            self.expect(")")
            most = op.arity + len(op.params)
            if not op.arity <= len(args) <= most:
                counts = f"{op.arity}" if most == op.arity else f"{op.arity} or {most}"
                raise self.fail(f"{word}() takes {counts} argument{'s' * (most > 1)}, "
                                f"got {len(args)}", tok)
            params = self.params(op, args[op.arity:], tok)
            return self.b.add(op.name, tuple(args[:op.arity]), params=params)
        if word in FUNCTIONS:
            raise self.fail(f"{word!r} is a function; call it as {word}(...)", tok)
        if word in self.names:
            return self.names[word]
        if word in CONSTANTS:
            self.constants_used.add(word)
            return self.b.add(CONST, value=CONSTANTS[word])
        i = self.b.add(INPUT, name=word)
        self.names[word] = i
        return i

    def params(self, op, extra: list[int], tok: _Tok) -> tuple:
        """A call's arguments after its inputs: whole numbers written in place (mean(x, 0)),
        taken back off the graph as the op's parameters."""
        values = []
        for i in reversed(extra):
            node = self.b.nodes[i]
            fresh = i == len(self.b.nodes) - 1 and node.op == CONST and not node.named
            if not fresh or not float(node.value).is_integer():
                name = op.params[len(values)][0] if len(op.params) == 1 else "parameters"
                raise self.fail(f"the {'axis' if name == 'dim' else name} of {op.name}() must be "
                                f"a whole number written in place, like {op.name}(x, 0)", tok)
            values.append(int(self.b.pop().value))
        return tuple((name, v) for (name, _), v in zip(op.params, reversed(values)))
