"""The HTTP surface: the app factory, routes, middleware (failure boundary, canonical paths,
concurrency), and the server with its connection limits and lifecycle."""
