"""Channel and handshake authorization; never imports the transport."""

from .authorizer import AuthRequest, AuthResult, ChannelAuthorizer, DenyAllAuthorizer

__all__ = ["AuthRequest", "AuthResult", "ChannelAuthorizer", "DenyAllAuthorizer"]
