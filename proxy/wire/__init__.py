"""The OpenAI wire format: request and response schema, where each endpoint keeps its text and
logprobs, withheld shapes, request bodies, canonical paths. Imports nothing above it."""
