"""The JSON API: thin views over `agents.interfaces` that call the chat service."""
