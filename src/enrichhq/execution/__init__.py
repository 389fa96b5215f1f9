"""Executors: how a batch's items are driven through a provider, storage and the logger."""
