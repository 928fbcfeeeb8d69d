"""The Pusher Channels protocol (7) on the same channels as Socket.IO: Laravel Echo's
``reverb`` and ``pusher`` broadcasters over pusher-js. ``apps``: which keys connect and the
signatures they bring; ``wire``: the core's ``Wire`` in Pusher's JSON frames; ``endpoint``:
the websocket at ``/app/{key}`` and its messages (``connection``: one client's);
``protocol``: all of it built and declared to the server."""
