"""An LLM judge behind any OpenAI-compatible chat-completions endpoint (vLLM,
llama.cpp's server, Ollama, text-generation-inference, a hosted API), with
the reference pipeline's judge prompts: each role's ``eval_prompt`` with the
question and answer filled in, sent as one user message; the reply is parsed
for a score 0..3 (:func:`parse_score`).

Plain :mod:`urllib` (no client library); requests are retried on connection
errors, 429 and 5xx with exponential back-off; answers may be scored in
parallel threads (``workers``). The API key, if the server needs one, comes
from the ``api_key`` argument or the environment variable named by
``api_key_env`` (default ``AXIS_STEER_JUDGE_API_KEY``) and is sent as a bearer
token; it is never written anywhere.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline.roles import RoleSet, as_role_set

__all__ = ["EndpointJudge", "parse_score"]

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LABELLED = re.compile(r"(?:score|rating|answer)\s*(?:is|=|:)?\s*\**\s*([0-3])(?!\.?[0-9])", re.IGNORECASE)
_FRACTION = re.compile(r"(?<![0-9.])([0-3])\s*/\s*3(?![0-9])")
_DIGIT = re.compile(r"(?<![0-9.])([0-3])(?!\.?[0-9])")


def parse_score(text: str) -> int | None:
    """The 0..3 score in a judge's reply, or ``None`` when there is none.

    Reasoning blocks (``<think>...</think>``) are dropped; then, in order: a
    labelled score ("Score: 2", "**Rating:** 3"), a fraction of 3 ("2/3"), a
    reply that is only a digit, and else the first standalone digit 0..3 when
    every standalone 0..3 digit in the reply is the same one. Anything else
    (no digit, conflicting digits, "5") is ``None``."""
    if not isinstance(text, str):
        return None
    t = _THINK.sub(" ", text).strip()
    if not t:
        return None
    for rx in (_LABELLED, _FRACTION):
        m = rx.search(t)
        if m:
            return int(m.group(1))
    stripped = t.strip(" *.`'\"")
    if stripped in ("0", "1", "2", "3"):
        return int(stripped)
    digits = set(_DIGIT.findall(t))
    if len(digits) == 1:
        return int(digits.pop())
    return None


class EndpointJudge:
    """``judge(question, answer, role) -> 0..3`` by an LLM behind an
    OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: the model name the server expects.
        roles: the role set whose ``eval_prompt`` s are used (default the built-in set).
        api_key, api_key_env: see the module docs.
        max_tokens, temperature: sampling of the judge (the score is one digit).
        retries, timeout: per request.
        workers: parallel requests in :meth:`score_batch`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        roles: RoleSet | str | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str = "AXIS_STEER_JUDGE_API_KEY",
        max_tokens: int = 8,
        temperature: float = 0.0,
        retries: int = 4,
        timeout: float = 60.0,
        workers: int = 4,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} (expected http://host:port/v1 or https://...)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.roles = as_role_set(roles)
        self._key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        self.retries, self.timeout, self.workers = int(retries), float(timeout), max(1, int(workers))
        self.unparsed: list[str] = []  #: replies no score could be read from

    def prompt(self, question: str, answer: str, role: str) -> str:
        return self.roles.role(role).judge_prompt(question, answer)

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        delay = 0.5
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 500, 502, 503, 504) or attempt == self.retries:
                    detail = exc.read().decode(errors="replace")[:200]
                    raise AxisSteerError(f"judge endpoint {self.url}: HTTP {exc.code} ({detail})") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise AxisSteerError(f"judge endpoint {self.url}: unreachable ({exc})") from exc
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def reply(self, question: str, answer: str, role: str, *, max_tokens: int | None = None) -> str:
        """The judge's raw reply."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompt(question, answer, role)}],
            "max_tokens": int(max_tokens or self.max_tokens),
            "temperature": self.temperature,
        }
        out = self._post(body)
        try:
            return str(out["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise AxisSteerError(f"judge endpoint {self.url}: not a chat-completions reply ({str(out)[:200]})") from exc

    def __call__(self, question: str, answer: str, role: str) -> int:
        text = self.reply(question, answer, role)
        score = parse_score(text)
        if score is None:
            # a second try with room to finish the sentence
            text = self.reply(question, answer, role, max_tokens=max(self.max_tokens, 32))
            score = parse_score(text)
        if score is None:
            self.unparsed.append(text)
            raise AxisSteerError(
                f"judge endpoint {self.url}: no score 0..3 in the reply {text[:120]!r} (role {role!r})"
            )
        return score

    def score_batch(self, questions: Sequence[str], answers: Sequence[str], roles: Sequence[str]) -> list[int]:
        args: list[Any] = list(zip(questions, answers, roles))
        if self.workers == 1 or len(args) < 2:
            return [self(*a) for a in args]
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(lambda a: self(*a), args))

    def __repr__(self) -> str:
        return f"EndpointJudge({self.model!r} at {self.url})"
