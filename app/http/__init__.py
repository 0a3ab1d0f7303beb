"""The HTTP layer: thin routes, request and response schemas, body parsing and limits."""
