"""Neutral pieces every room may use (the server, ``channel_auth``, ``broadcaster``): they
know no Laravel channel, no wire protocol and no server object."""
