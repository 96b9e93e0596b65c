"""Speechgate: the ASGI application, its session core, front-ends, client and CLI."""
