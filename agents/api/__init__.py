"""The JSON API: decorators that authenticate and parse, thin views that call the chat service."""
