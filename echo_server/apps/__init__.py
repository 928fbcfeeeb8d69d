"""The apps room: one typed ``App`` (``model``; its secret signs through
``echo_common.signing``; ``endpoints``: an isolated app's Socket.IO hosts and path; ``tags``:
its channels' suffix; ``rates``: its rate limits; ``authorizers``: its channel rules and
/broadcasting/auth), and where apps come from (``store``: the interface; ``file_store``:
laravel-echo-server.json; ``reverb``: Reverb's ``.env``; ``postgres``: a table seen live
through LISTEN/NOTIFY, behind ``cache``; ``manager``: which of them the configuration asks
for), and an app's ``maxConnections`` over both protocols (``seats``), held over every
worker (``quota``). It imports no transport, adapter or web module: those take an ``App``
from here.
"""
