"""Reaching upstream models: a provider is one module behind :mod:`proxy.upstream.registry`;
their failures are translated in one place (:mod:`proxy.upstream.failures`)."""
