"""The loopback llama.cpp server: OpenAI wire protocol, text tool calls made structured."""

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from bot.local.chat_format import extract_tool_calls, normalise_messages
from bot.local.llm_server import create_app

TOOLS = [{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "text,spoken,calls",
    [
        ("The capital of France is Paris.", "The capital of France is Paris.", []),
        ('<tool_call>\n{"name": "web_search", "arguments": {"query": "mars news"}}\n</tool_call>',
         "", [{"name": "web_search", "arguments": {"query": "mars news"}}]),
        ('Let me check. <tool_call>{"name": "web_search", "arguments": {"query": "x"}}</tool_call>',
         "Let me check.", [{"name": "web_search", "arguments": {"query": "x"}}]),
        ('{"name": "web_search", '
         '"arguments": {"query": "mars mission latest news"}',  # brace forgotten
         "", [{"name": "web_search", "arguments": {"query": "mars mission latest news"}}]),
        ('```json\n{"name": "web_search", "arguments": "{\\"query\\": \\"q\\"}"}\n```',
         "", [{"name": "web_search", "arguments": {"query": "q"}}]),
        # not offered: not a call, not speech
        ('{"name": "delete_everything", "arguments": {}}', "", []),
        ('{"name": "web_search", "arguments": {"query": "opening hours"} trailing junk',
         "", [{"name": "web_search", "arguments": {"query": "opening hours"}}]),
        ("{not json at all", "{not json at all", []),
    ],
)
def test_extract_tool_calls(text, spoken, calls):
    assert extract_tool_calls(text, {"web_search"}) == (spoken, calls)


def test_messages_are_normalised_for_chat_templates():
    out = normalise_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Now greet."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "web_search", "arguments": '{"query": "q"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    ])
    assert out[0] == {"role": "system", "content": "Be brief.\n\nNow greet."}
    assert out[1] == {"role": "user", "content": "hi"}
    assert out[2]["tool_calls"][0]["function"]["arguments"] == {"query": "q"}
    assert out[3]["role"] == "user" and "result" in out[3]["content"]  # told, not a tool turn


class ScriptedEngine:
    """Stands in for llama.cpp: yields a fixed reply piece by piece."""

    model_name = "scripted"

    def __init__(self, pieces):
        self.pieces = pieces
        self.stopped_early = threading.Event()

    def stream(self, body, cancelled):
        for piece in self.pieces:
            if cancelled.is_set():
                self.stopped_early.set()
                return
            yield piece


def sse_deltas(response) -> list[dict]:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:])["choices"][0])
    return out


def test_streamed_text_passes_through():
    client = TestClient(create_app(ScriptedEngine(["The capital", " of France", " is Paris."])))
    with client.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "?"}], "stream": True, "tools": TOOLS}) as r:
        choices = sse_deltas(r)
    text = "".join(c["delta"].get("content") or "" for c in choices)
    assert text == "The capital of France is Paris."
    assert choices[-1]["finish_reason"] == "stop"


def test_streamed_text_tool_call_becomes_structured():
    pieces = ["<tool_call>", '\n{"name": "web_search", ', '"arguments": {"query": "weather"}}',
              "\n</tool_call>"]
    client = TestClient(create_app(ScriptedEngine(pieces)))
    with client.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "?"}], "stream": True, "tools": TOOLS}) as r:
        choices = sse_deltas(r)
    assert not "".join(c["delta"].get("content") or "" for c in choices)
    calls = [tc for c in choices for tc in c["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "web_search"
    assert json.loads(calls[0]["function"]["arguments"]) == {"query": "weather"}
    assert choices[-1]["finish_reason"] == "tool_calls"


def test_without_tools_json_text_is_just_text():
    client = TestClient(create_app(ScriptedEngine(['{"name": "web_search"}'])))
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "?"}]})
    assert r.json()["choices"][0]["message"]["content"] == '{"name": "web_search"}'


def test_malformed_request_is_a_clear_400():
    client = TestClient(create_app(ScriptedEngine([])))
    assert client.post("/v1/chat/completions", content=b"{oops").status_code == 400
    r = client.post("/v1/chat/completions", json={"prompt": "no messages"})
    assert r.status_code == 400 and "messages" in r.json()["detail"]


class FailingEngine(ScriptedEngine):
    """Yields its pieces, then fails as llama.cpp does on a prompt too long for its context."""

    def stream(self, body, cancelled):
        yield from super().stream(body, cancelled)
        raise ValueError("Requested tokens (4100) exceed context window of 4096")


def test_a_failing_model_is_a_clear_500():
    client = TestClient(create_app(FailingEngine([])))
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "?"}]})
    assert r.status_code == 500
    assert "exceed context window" in r.json()["error"]["message"]


def test_a_model_failing_mid_stream_ends_the_stream_with_an_error_the_sdk_raises():
    from openai import APIError, OpenAI

    client = TestClient(create_app(FailingEngine(["The capital"])))
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "?"}], "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["error"]["type"] == "server_error"
    assert "exceed context window" in events[-1]["error"]["message"]
    # Pipecat's OpenAI service reads it through the SDK: an APIError that names the cause
    # (a dropped connection said only "Connection error.").
    sdk = OpenAI(api_key="local", base_url="http://testserver/v1", http_client=client,
                 max_retries=0)
    stream = sdk.chat.completions.create(model="scripted",
                                         messages=[{"role": "user", "content": "?"}], stream=True)
    with pytest.raises(APIError, match="exceed context window"):
        for _ in stream:
            pass


def test_real_model_answers_a_simple_question(models):
    server = models.llm_server
    r = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
        "model": server.model_name, "max_tokens": 40, "temperature": 0,
        "messages": [{"role": "system", "content": "Answer in one short sentence."},
                     {"role": "user", "content": "What is the capital of France?"}]})
    assert "paris" in r.json()["choices"][0]["message"]["content"].lower()


def test_unreadable_call_json_is_never_streamed_as_speech():
    client = TestClient(create_app(ScriptedEngine(['{"name": "web_search", ',
                                                   '"arguments": {"q" oops'])))
    with client.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "?"}], "stream": True, "tools": TOOLS}) as r:
        choices = sse_deltas(r)
    assert not "".join(c["delta"].get("content") or "" for c in choices)


class RepliesEngine(ScriptedEngine):
    """A different scripted reply per request; records which requests offered tools."""

    def __init__(self, *replies):
        super().__init__([])
        self.replies = list(replies)
        self.offered_tools = []

    def stream(self, body, cancelled):
        self.offered_tools.append(bool(body.get("tools")) and body.get("tool_choice") != "none")
        self.pieces = self.replies.pop(0)
        yield from super().stream(body, cancelled)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("first_reply", [
    # a tool that is not offered
    ['{"name": "capital_of_france", ', '"arguments": {"query": "Paris"}}'],
    # tools echoed
    ["<tools>\n", '{"type": "function", "function": {"name": "city_info"}}', "\n</tools>"],
])
def test_no_speech_and_no_usable_call_is_answered_again_without_tools(first_reply, stream):
    engine = RepliesEngine(first_reply, ["Paris is the capital", " of France."])
    client = TestClient(create_app(engine))
    body = {"messages": [{"role": "user", "content": "?"}], "stream": stream, "tools": TOOLS}
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            choices = sse_deltas(r)
        text = "".join(c["delta"].get("content") or "" for c in choices)
        assert choices[-1]["finish_reason"] == "stop"
    else:
        text = (client.post("/v1/chat/completions", json=body)
                .json()["choices"][0]["message"]["content"])
    assert text == "Paris is the capital of France."
    assert engine.offered_tools == [True, False]


@pytest.mark.parametrize("stream", [True, False])
def test_a_search_unrelated_to_the_question_is_not_made(stream):
    """Seen live: "What is the capital of France?" answered with a search for a help page."""
    call = ['{"name": "web_search", "arguments": '
            '{"query": "What is the help page for Brightline Telecom?"}}']
    engine = RepliesEngine(call, ["The capital of France is Paris."])
    client = TestClient(create_app(engine))
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "stream": stream, "tools": TOOLS}
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            choices = sse_deltas(r)
        text = "".join(c["delta"].get("content") or "" for c in choices)
        assert not any(c["delta"].get("tool_calls") for c in choices)
    else:
        message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        text = message["content"]
        assert "tool_calls" not in message
    assert text == "The capital of France is Paris."
    assert engine.offered_tools == [True, False]


def test_a_search_about_the_question_is_made():
    call = ['{"name": "web_search", "arguments": {"query": "Brightline roaming charges"}}']
    client = TestClient(create_app(RepliesEngine(call)))
    body = {"messages": [{"role": "user",
                          "content": "How much does Brightline charge for roaming abroad?"}],
            "tools": TOOLS}
    message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    arguments = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"query": "Brightline roaming charges"}


class RepeatingEngine(ScriptedEngine):
    """Writes a call, then would repeat it (as the small model does) unless stopped."""

    def stream(self, body, cancelled):
        yield from self.pieces
        if cancelled.wait(10):
            self.stopped_early.set()
            return
        for _ in range(3):
            yield "\n"
            yield from self.pieces


def test_generation_stops_once_the_call_is_written():
    engine = RepeatingEngine(['{"name": "web_search", ', '"arguments": {"query": "q"}}'])
    client = TestClient(create_app(engine))
    with client.stream("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "?"}], "stream": True, "tools": TOOLS}) as r:
        choices = sse_deltas(r)
    calls = [tc for c in choices for tc in c["delta"].get("tool_calls") or []]
    assert len(calls) == 1 and json.loads(calls[0]["function"]["arguments"]) == {"query": "q"}
    assert engine.stopped_early.wait(5)


def test_dropping_the_oldest_turns_keeps_the_rest_of_the_cache(models):
    """The context budget drops whole turns from the front; only the new turn is read."""
    from bot.config import DEFAULT_SYSTEM_PROMPT
    from bot.local.llm_engine import Engine

    engine = Engine(str(models.gguf_path()), threads=2, n_ctx=2048, model_name="test")
    tools = [{"type": "function", "function": {
        "name": "web_search", "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    history = [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("What is the capital of Spain?", "The capital of Spain is Madrid."),
        ("What is the capital of Italy?", "The capital of Italy is Rome."),
        ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ]

    def ask(turns, question, conversation="one"):
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
        for user, bot in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": bot}]
        messages.append({"role": "user", "content": question})
        body = {"messages": messages, "tools": tools, "max_tokens": 16, "temperature": 0.0,
                "seed": 1, "user": conversation}
        return "".join(engine.stream(body, threading.Event()))

    ask([], "Hello.")  # a short cache that cannot hold the next prompt's continuation
    ask(history, "What is the capital of Egypt?")
    read_whole = engine.llm.prompt_tokens_evaluated
    engine.llm.reset()
    ask(history, "What is the capital of Egypt?")
    assert engine.llm.prompt_tokens_evaluated > read_whole - 10  # a cold cache reads it all

    kept = history[2:] + [("What is the capital of Egypt?", "The capital of Egypt is Cairo.")]
    answer = ask(kept, "What is the capital of Germany?")
    assert engine.llm.tokens_shifted > 30, "the kept turns stayed in the cache"
    assert engine.llm.prompt_tokens_evaluated < 40, engine.llm.prompt_tokens_evaluated
    assert "Berlin" in answer

    # Another conversation with the same words: the cache was computed with the first
    # conversation's turns in view, so it is not shifted into this one.
    ask(history, "What is the capital of Egypt?", conversation="two")
    ask(kept, "What is the capital of Germany?", conversation="three")
    assert engine.llm.tokens_shifted == 0


def test_conversations_taking_turns_each_get_their_own_cache_back(models):
    from bot.config import DEFAULT_SYSTEM_PROMPT
    from bot.local.llm_engine import Engine

    engine = Engine(str(models.gguf_path()), threads=2, n_ctx=2048, model_name="test")
    said = {"alice": [], "bob": []}
    topics = {"alice": ["France", "Spain", "Italy"], "bob": ["Japan", "China", "India"]}
    read = {"alice": [], "bob": []}
    for round_ in range(3):
        for who in ("alice", "bob"):
            messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
            for question, answer in said[who]:
                messages += [{"role": "user", "content": question},
                             {"role": "assistant", "content": answer}]
            question = f"My name is {who}. What is the capital of {topics[who][round_]}?"
            messages.append({"role": "user", "content": question})
            body = {"messages": messages, "max_tokens": 16, "temperature": 0.0, "seed": 1,
                    "user": who}
            answer = "".join(engine.stream(body, threading.Event()))
            said[who].append((question, answer))
            read[who].append(engine.llm.prompt_tokens_evaluated)
    assert engine.caches.restored == 4  # every turn after each one's first
    # Only the new turn (and the previous answer as the template writes it) is read again.
    for who in read:
        assert all(n < 60 for n in read[who][1:]), read
    assert "Madrid" in said["alice"][1][1] and "Beijing" in said["bob"][1][1], said


def test_each_local_llm_service_names_its_own_conversation(settings, models):
    from bot.providers import create_llm

    first, second = create_llm(settings, models), create_llm(settings, models)
    users = {first._settings.extra["user"], second._settings.extra["user"]}
    assert len(users) == 2 and all(users)


def test_a_turn_marker_opens_the_reply_whatever_else_scores_higher():
    import numpy as np

    from bot.local.turn_markers import TurnMarkerChoice

    complete, short, long_, end, other_end, word = 10, 11, 12, 0, 1, 5
    ends = [end, other_end]
    choice = TurnMarkerChoice([complete, short, long_], end_tokens=ends)
    prompt = np.arange(100, 140)
    scores = np.zeros(20)
    scores[word], scores[long_], scores[complete] = 9.0, 3.0, 2.0
    first = choice(prompt, scores.copy())
    assert np.argmax(first) == long_ and np.isinf(np.delete(first, long_)).all()
    # After an incomplete marker the reply ends...
    assert np.argmax(choice(np.append(prompt, long_), scores.copy())) == end
    # ...after the complete one it goes on as the model writes it, but does not end at once.
    again = TurnMarkerChoice([complete, short, long_], end_tokens=ends)
    scores[complete] = 4.0
    assert np.argmax(again(prompt, scores.copy())) == complete
    scores[other_end] = 20.0
    after = again(np.append(prompt, complete), scores.copy())
    assert np.isinf(after[ends]).all() and np.argmax(after) == word
    assert (np.delete(after, ends) == np.delete(scores, ends)).all()


def test_the_real_model_opens_each_reply_with_a_turn_marker(models):
    """Pipecat's markers (complete ●, incomplete ◐ ○): a question is answered after ●, a
    request to wait is one incomplete marker and nothing more."""
    from pipecat.turns.user_turn_completion_mixin import UserTurnCompletionConfig

    from bot.config import DEFAULT_SYSTEM_PROMPT

    server = models.llm_server
    completion = UserTurnCompletionConfig()
    markers = list(completion.markers)
    # as Pipecat composes it
    system = f"{DEFAULT_SYSTEM_PROMPT}\n\n{completion.completion_instructions}"

    def reply(user: str, history=()) -> str:
        r = httpx.post(f"{server.base_url}/chat/completions", timeout=120, json={
            "model": server.model_name, "max_tokens": 40, "temperature": 0.3, "seed": 7,
            "messages": [{"role": "system", "content": system}, *history,
                         {"role": "user", "content": user}],
            "turn_markers": markers})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    answer = reply("What is the capital of France?")
    assert answer.startswith("● ") and "paris" in answer.lower(), answer
    assert reply("Hold on, let me think.") in markers[1:]
    # A reply interrupted before a word of it was heard is a bare ● in Pipecat's context.
    # (A conversation from Pipecat's `interruption` eval: with the bare ● the reply was "●"
    # alone, or "● I understand.".)
    interrupted = [
        {"role": "user", "content": "(The caller has just connected. Hi! Ask me anything.)"},
        {"role": "assistant", "content": "● Hi! Ask me anything."},
        {"role": "user", "content": "Tell me a long, detailed story about the history of Paris."},
        {"role": "assistant", "content": "●"},
    ]
    answer = reply("Actually, never mind that what's the capital of Japan.", interrupted)
    assert answer.startswith("● ") and "tokyo" in answer.lower(), answer

    r = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "Hi"}], "turn_markers": ["● complete", "○"]})
    assert r.status_code == 400 and "not one" in r.json()["detail"]
