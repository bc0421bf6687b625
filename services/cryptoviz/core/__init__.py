"""Shared core: the quote model, the message contract, configuration and NATS helpers.

Everything here is used by more than one service; nothing here imports a service.
"""
