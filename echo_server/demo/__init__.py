"""``echo-server demo``: the backend playing the Laravel app (``app``) and its webhook inbox
(``webhooks``). Kept in a room of its own so the server never depends on it."""
