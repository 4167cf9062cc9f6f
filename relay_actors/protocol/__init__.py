"""The sans-IO RELAY protocol core: frames in, frames and events out; no sockets, no asyncio, no Ray."""
