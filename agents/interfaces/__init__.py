"""What every interface shares: authentication, request bodies, the error shape, rendering.

The JSON API (`agents/api/`), the OpenAI-compatible API (`agents/openai_api/`), the
websocket consumer and the pages import from here and never from one another.
"""
