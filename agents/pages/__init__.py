"""Browser pages for support staff: home, chat, documents, API tokens, and their small form endpoints."""
