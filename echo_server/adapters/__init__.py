"""Wire-protocol adapters: each turns its protocol's messages into calls on the channel core
and implements the core's ``Wire`` for its connections. Socket.IO: ``socketio_protocol``
(built and declared), ``socketio_echo`` (Echo's events), ``socketio_apps`` (which app owns a
handshake), ``socketio_bundle`` (socket.io.js); Pusher: ``pusher``. An app's bounds, the same
on both wires: ``app_bounds``, ``presence_bounds``; a batch's frames written at once, for
every wire: ``coalesce``. ``protocols`` and ``registry``: how a protocol is declared, and
which are."""
