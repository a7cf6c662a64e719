"""Durable orchestrators (deterministic code only) and the registry the worker and listener share."""
