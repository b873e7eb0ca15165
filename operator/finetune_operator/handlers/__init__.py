"""Kopf handlers: thin edges that feed watch events to `reconcile.decide` and carry out its actions."""
