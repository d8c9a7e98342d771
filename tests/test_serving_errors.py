"""How every endpoint answers a ClientError: the API methods' decorator (BentoML still reads their signature)."""

from __future__ import annotations

import asyncio
import inspect
import json
import typing as t
from types import SimpleNamespace

import bentoml
import pytest

from rakuten_classifier.serving.errors import ClientError, answers_client_errors


async def _classify(self, designation: str, top_k: int = 5, explain: bool = False) -> dict:
    """Classify a title."""
    if not designation.strip():
        raise ClientError("empty product", detail=[{"loc": ["designation"]}])
    if top_k > 27:
        raise ClientError("too slow", 504)
    return {"prdtypecode": 10}


async def _train(self, data_dir: str | None = None, ctx: bentoml.Context = None) -> dict:  # type: ignore[assignment]
    """Start a job."""
    if data_dir == "busy":
        raise ClientError("a job is running", 409)
    ctx.response.status_code = 202
    return {"job_id": "j"}


def test_an_api_methods_client_error_becomes_its_json_answer_with_its_status():
    classify: t.Any = answers_client_errors(_classify)  # typed as the method: BentoML sends a Response as is
    assert asyncio.run(classify(None, "piscine")) == {"prdtypecode": 10}
    refused = asyncio.run(classify(None, " "))
    assert refused.status_code == 400
    assert json.loads(refused.body) == {"error": "empty product", "detail": [{"loc": ["designation"]}]}
    late = asyncio.run(classify(None, "piscine", top_k=30))
    assert (late.status_code, json.loads(late.body)) == (504, {"error": "too slow"})


def test_a_method_with_bentomls_context_gets_the_status_on_the_context():
    # BentoML answers such a method with the context's status, whatever Response it returns.
    train: t.Any = answers_client_errors(_train)
    ctx = SimpleNamespace(response=SimpleNamespace(status_code=200))
    assert asyncio.run(train(None, "busy", ctx=ctx)) == {"error": "a job is running"}
    assert ctx.response.status_code == 409
    assert asyncio.run(train(None, None, ctx=ctx)) == {"job_id": "j"}
    assert ctx.response.status_code == 202


@pytest.mark.parametrize("method", [_classify, _train])
def test_bentoml_reads_a_wrapped_method_as_the_method_itself(method):
    wrapped = answers_client_errors(method)
    assert inspect.signature(wrapped) == inspect.signature(method)
    assert inspect.iscoroutinefunction(wrapped)
    plain, decorated = bentoml.api(method), bentoml.api(wrapped)
    assert decorated.schema() == plain.schema()  # name, route, input and output schemas
    assert (decorated.name, decorated.route, decorated.ctx_param) == (plain.name, plain.route, plain.ctx_param)
