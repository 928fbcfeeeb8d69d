"""Wire-protocol adapters: each turns its protocol's messages into calls on the channel core
and implements the core's ``Wire`` for its connections."""
