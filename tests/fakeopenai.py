"""The OpenAI-style answers of the fake model API (tests/fakeupstream.py serves them).

Codex speaks the Responses API (POST /v1/responses, streamed), OpenCode and Aider speak
Chat Completions (POST /v1/chat/completions, streamed or not); all three may list models
(GET /v1/models). Every answer says ANSWER, so a test can tell the fake answered.
"""

from __future__ import annotations

import json
import time
from typing import Any

ANSWER = "pong from the fake upstream"
MODEL = "fake-model"


def models() -> dict[str, Any]:
    """GET /v1/models: one model, as the OpenAI API lists them."""
    return {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "coi-tests"}],
    }


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}


def chat(request: dict[str, Any]) -> dict[str, Any]:
    """A whole Chat Completions answer."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model") or MODEL),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }


def chat_stream(request: dict[str, Any]) -> list[bytes]:
    """A streamed Chat Completions answer: role, the text, the stop, usage, [DONE]."""
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": str(request.get("model") or MODEL),
    }
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": ANSWER}, None),
        ({}, "stop"),
    ]
    chunks = [
        base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    chunks.append(base | {"choices": [], "usage": _usage()})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def responses_stream(request: dict[str, Any]) -> list[bytes]:
    """A streamed Responses API answer: created, one message item with the text, completed."""
    model = str(request.get("model") or MODEL)
    text = {"type": "output_text", "text": ANSWER, "annotations": []}
    item = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [text],
    }
    usage = {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 6,
    }
    response = {"id": "resp_fake", "object": "response", "model": model, "created_at": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response | {"status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": item | {"status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "part": text | {"text": ""},
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "delta": ANSWER,
        },
        {
            "type": "response.output_text.done",
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "text": ANSWER,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": response | {"status": "completed", "output": [item], "usage": usage},
        },
    ]
    return [
        f"event: {e['type']}\ndata: {json.dumps(e | {'sequence_number': i})}\n\n".encode()
        for i, e in enumerate(events)
    ]
