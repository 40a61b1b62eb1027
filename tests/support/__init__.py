"""Helpers the tests share: polling, audio, settings and a live server (fixtures stay in
tests/conftest.py; the loopback cloud peers are in tests/peers/)."""
