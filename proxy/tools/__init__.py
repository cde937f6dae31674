"""Operator tools that drive the gateway: collecting labelled records, the demo, the local model."""
