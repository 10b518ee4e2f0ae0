"""OpenAI's error shape, so OpenAI clients raise their usual exception classes with our message.

`{"error": {"message", "type", "param", "code"}}`; the status code is the same as the JSON
API's for the same problem, only the body's shape differs.
"""

from __future__ import annotations

from django.http import JsonResponse

from agents.interfaces.errors import ApiError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# OpenAI's own codes where a client might look for them.
_CODES = {"unauthorized": "invalid_api_key", "agent_not_found": "model_not_found"}


def error_body(error: ApiError) -> dict[str, object]:
    return {
        "error": {
            "message": error.message,
            "type": _TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error"),
            "param": error.extra.get("param"),
            "code": _CODES.get(error.code, error.code),
            **{k: v for k, v in error.extra.items() if k != "param"},
        }
    }


def openai_error(error: ApiError) -> JsonResponse:
    response = JsonResponse(error_body(error), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response
