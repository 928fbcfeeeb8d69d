"""Channel and handshake authorization; never imports the transport."""

from .authorizer import AuthRequest, AuthResult, ChannelAuthorizer

__all__ = ["AuthRequest", "AuthResult", "ChannelAuthorizer"]
