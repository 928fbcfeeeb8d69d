// A pusher-js connection seen as the socket.io socket WebSocketService drives: `connected`,
// `connect()`, and the events `connect`, `disconnect(reason)`, `connect_error(error)`.
//
// Reconnection stays the service's, as for socket.io (whose Manager reconnection is off):
// pusher-js retries on a schedule of its own, and an attempt refused by a server that is down
// waits out a 15 s strategy timeout, so a server back after one second is seen about 13 s
// later. So every loss or failed attempt stops pusher-js's loop (`disconnect()`) and is
// reported; the service's backoff then calls `connect()`, which starts a fresh attempt.
// pusher-js says nothing of an attempt that cannot connect until `unavailableTimeout` (an
// option of the Pusher stack, see echo.js) turns its state `unavailable`: that is the failure.
// pusher-js resubscribes its channels itself on every `connected`; the service's own
// resubscription then finds them pending and sends nothing twice.

const USER_DISCONNECT = 'io client disconnect';  // socket.io's reason, which the service respects

function errorMessage(event) {
    const error = event && (event.error || event);
    const data = error && error.data;
    if (data && data.message) return `${data.message} (${data.code})`;
    if (data && data.code) return `closed with code ${data.code}`;
    return (error && (error.message || error.type)) || 'error';
}

export function pusherSocket(pusher) {
    const connection = pusher.connection;
    const handlers = new Map();
    let stopping = false;     // inside our own pusher.disconnect(): not the page's
    let lastError = null;     // pusher-js reports why just before it closes or gives up
    let pending = false;      // a loss already queued for reporting

    const fire = (event, ...args) => {
        for (const fn of [...(handlers.get(event) || [])]) fn(...args);
    };

    // Deferred: pusher-js announces `connecting` and `connecting_in` before it arms the
    // attempt or the timer, so a disconnect() inside the announcement would not stop them.
    const stopAndReport = (event, reason) => {
        if (pending) return;
        pending = true;
        queueMicrotask(() => {
            pending = false;
            stopping = true;
            try {
                pusher.disconnect();
            } finally {
                stopping = false;
            }
            lastError = null;
            fire(event, event === 'connect_error' ? new Error(reason) : reason);
        });
    };

    connection.bind('error', (event) => { lastError = errorMessage(event); });
    // Bound after Pusher's own `connected` handler, which resubscribes the channels first.
    connection.bind('connected', () => {
        lastError = null;
        fire('connect');
    });
    // The connection went away: pusher-js plans its retry in a second (or at once).
    connection.bind('connecting_in', () => {
        if (connection.state === 'connected') stopAndReport('disconnect', lastError || 'transport close');
    });
    connection.bind('state_change', ({ previous, current }) => {
        if (stopping || current === 'connected') return;
        if (previous === 'connected') {
            if (current === 'disconnected') {
                // Refused by the server (4000-4099: pusher-js disconnects itself) or by the page.
                const reason = lastError || USER_DISCONNECT;
                lastError = null;
                fire('disconnect', reason);
            } else {
                stopAndReport('disconnect', lastError || 'transport close');
            }
        } else if (current === 'unavailable' || current === 'failed') {
            stopAndReport('connect_error', lastError || `connection ${current}`);
        } else if (current === 'disconnected' && lastError) {
            const reason = lastError;  // refused during the handshake (4001 unknown key...)
            lastError = null;
            fire('connect_error', new Error(reason));
        }
    });

    return {
        get connected() { return connection.state === 'connected'; },
        get id() { return connection.socket_id; },
        recovered: false,  // the Pusher protocol has no session recovery
        on(event, fn) {
            if (!handlers.has(event)) handlers.set(event, new Set());
            handlers.get(event).add(fn);
            return this;
        },
        off(event, fn) {
            if (handlers.has(event)) handlers.get(event).delete(fn);
            return this;
        },
        connect() {
            pusher.connect();
            return this;
        },
    };
}
