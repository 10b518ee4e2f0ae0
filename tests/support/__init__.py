"""Real servers for tests: things the suite talks to over loopback instead of mocking."""
