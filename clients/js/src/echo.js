// One Laravel Echo instance for echo-server, for any of its client stacks:
//   laravel-echo 1.x + socket.io-client 2.x (Engine.IO 3),
//   laravel-echo 2.x + socket.io-client 3.x/4.x (Engine.IO 4), or
//   laravel-echo 2.x with `broadcaster: 'reverb'` over pusher-js (the Pusher protocol).
//
// It sends the handshake token where each stack can carry it (socket.io-client 2 has no
// connect payload and browsers cannot set websocket headers, so there it travels in the query
// string; socket.io-client 4 sends it in the CONNECT packet's `auth`), optionally also as the
// `Authorization: Bearer` header Echo forwards with every subscribe (what /broadcasting/auth
// sees), and renews it before it expires: `refreshToken()` supplies a new one, which the next
// (re)connect and the next subscribe use. A live connection keeps the token it was opened
// with; echo-server closes it when that token expires, and the reconnect carries the new one.
// The Pusher protocol has no handshake token: there the token is only the Bearer pusher-js
// sends to the app's /broadcasting/auth, which signs the subscriptions, and to its
// /broadcasting/user-auth, which signs the user in (`pusher:signin`) on every connection:
// echo-server with `jwt.required` closes a Pusher connection that has not signed in in time.
//
// Connection-state recovery: socket.io-client >= 4.6 does it by itself. For socket.io-client 2,
// whose protocol has none, the kit speaks echo-server's extension: the handshake's query opts
// in (`echoRecovery=1`), the server then tells the session's pid (`echo:recovery`), every event
// carries its offset as a last argument, and each reconnect brings both back in the query
// (`echoRecovery=<pid>`, `echoOffset=<offset>`). The socket then reports `recovered`.

import { pusherSocket } from './pusherSocket.js';

const MAX_TIMER = 2 ** 31 - 1;  // setTimeout fires at once for longer delays
const USER_AUTH_ENDPOINT = '/broadcasting/user-auth';  // Laravel's route, Echo's default
const AUTH_ERROR = /token|jwt|unauthori[sz]ed|not authorized|forbidden|expired/i;

/**
 * socket.io-client 2 and echo-server's recovery extension: keep the pid the server tells and
 * the last event's offset, in the query the next engine handshake sends (`query` is Echo's,
 * which socket.io-client 2 copies into its Manager: both are kept), and mark the socket
 * `recovered` as the server says.
 */
function followRecovery(socket, query) {
    const queries = () => [query, socket.io && socket.io.opts && socket.io.opts.query]
        .filter((q) => q && typeof q === 'object');
    const set = (name, value) => {
        for (const q of queries()) {
            if (value === null) delete q[name];
            else q[name] = value;
        }
    };
    socket.on('echo:recovery', (info) => {
        socket.recovered = Boolean(info && info.recovered);
        if (info && typeof info.pid === 'string') set('echoRecovery', info.pid);
        if (!socket.recovered) set('echoOffset', null);  // a new session: offsets start over
    });
    const onevent = socket.onevent;
    if (typeof onevent !== 'function') return;  // not socket.io-client 2's Socket
    socket.onevent = function onEvent(packet) {
        const args = (packet && packet.data) || [];
        // ["event", channel, data, offset]: Echo's listeners take (channel, data) only.
        if (args.length === 4 && typeof args[3] === 'string') set('echoOffset', args[3]);
        return onevent.call(this, packet);
    };
}

/**
 * The socket.io protocol revision of an `io` function: 4 for socket.io-client 2.x (which
 * exports `protocol` on it), 5 for 3.x/4.x (whose `io` carries no `protocol`; its module does).
 */
export function socketIoProtocol(io) {
    if (typeof io !== 'function') {
        throw new Error('createEcho: `io` must be the socket.io-client `io` function (2.x, 3.x or 4.x)');
    }
    return Number(io.protocol) === 4 ? 4 : 5;
}

function base64UrlDecode(text) {
    const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

/** The `exp` of a JWT in ms since the epoch; null for anything that is not a JWT with `exp`. */
export function tokenExpiry(token) {
    if (typeof token !== 'string') return null;
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
        const exp = JSON.parse(base64UrlDecode(parts[1])).exp;
        return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
    } catch {
        return null;
    }
}

/** Echo's options for pusher-js to reach echo-server's `/app/{key}` at `host` (a URL). */
function pusherOptions(host, key) {
    if (!key) throw new Error('createEcho: the Pusher stack needs the app `key`');
    const url = new URL(host);
    const tls = url.protocol === 'https:';
    const port = Number(url.port) || (tls ? 443 : 80);
    return {
        broadcaster: 'reverb', key, wsHost: url.hostname, wsPort: port, wssPort: port,
        forceTLS: tls, enabledTransports: ['ws', 'wss'],
        // How long an attempt may take before it counts as failed (see pusherSocket.js).
        unavailableTimeout: 5000,
    };
}

/**
 * Create the Echo instance and the token machinery around it.
 *
 * options:
 *   Echo             laravel-echo's default export
 *   io | Pusher      the transport: socket.io-client's `io`, or pusher-js's `Pusher` class
 *   host             echo-server's URL, e.g. 'http://127.0.0.1:6001'
 *   key              the Pusher app's key (Pusher stack only; it is public)
 *   token            handshake token (JWT) or null
 *   refreshToken     async (oldToken) => newToken; called `refreshBefore` ms before `exp`
 *                    (or half-way through a shorter life), and before a reconnect when the
 *                    token has expired or the server refused it
 *   refreshBefore    ms (30000)
 *   refreshRetry     ms between failed refresh attempts (5000)
 *   bearer           also send the token as `Authorization: Bearer` on channel auth (and
 *                    user auth on the Pusher stack) (true)
 *   authHeaders      more headers for /broadcasting/auth (and /broadcasting/user-auth)
 *                    (e.g. X-CSRF-TOKEN)
 *   echoOptions      anything else for Echo and socket.io or pusher-js (transports,
 *                    reconnection; for pusher-js `authEndpoint` and
 *                    `userAuthentication.endpoint`, the app's routes, which get the same
 *                    headers)
 *   onTokenRefreshed (token) => void, onTokenError (error) => void
 *   timers, now      injectable clock for tests
 */
export function createEcho(options) {
    const {
        Echo, io, Pusher, host, key, token = null, refreshToken = null, refreshBefore = 30000,
        refreshRetry = 5000, bearer = true, authHeaders = {}, echoOptions = {},
        onTokenRefreshed = null, onTokenError = null, timers = globalThis, now = () => Date.now(),
    } = options;
    if (typeof Echo !== 'function') throw new Error('createEcho: `Echo` (laravel-echo) is required');
    const protocol = Pusher ? null : socketIoProtocol(io);

    let current = token;
    let refreshTimer = null;
    let inflight = null;
    let refusedForToken = false;
    let disposed = false;

    // Echo keeps a reference to `auth` (and writes X-CSRF-TOKEN into its headers); socket.io 4
    // sends that same object as the CONNECT payload, so updating it in place is enough.
    const auth = { ...(echoOptions.auth || {}) };
    auth.headers = { ...((echoOptions.auth && echoOptions.auth.headers) || {}), ...authHeaders };
    const query = { ...(echoOptions.query || {}) };
    if (protocol === 4) query.echoRecovery = '1';  // echo-server's recovery extension
    // pusher-js keeps this same `auth.headers` object for its /broadcasting/auth and
    // /broadcasting/user-auth requests.
    const settings = Pusher ? {
        ...pusherOptions(host, key), ...echoOptions, Pusher, auth,
        userAuthentication: {
            endpoint: USER_AUTH_ENDPOINT, ...echoOptions.userAuthentication, headers: auth.headers,
        },
    } : {
        broadcaster: 'socket.io',
        // One Manager per Echo: socket.io-client would otherwise share a cached connection
        // between instances on the same URL.
        forceNew: true,
        ...echoOptions,
        host,
        client: io,
        auth,
    };
    if (protocol === 4) settings.query = query;

    function applyToken(value) {
        if (protocol === 5) {
            if (value) auth.token = value;
            else delete auth.token;
        } else if (protocol === 4) {
            if (value) query.token = value;
            else delete query.token;
        }
        if (bearer) {
            if (value) auth.headers.Authorization = `Bearer ${value}`;
            else delete auth.headers.Authorization;
        }
    }
    applyToken(current);

    const echo = new Echo(settings);
    // Once is enough: pusher-js signs in when connected, and again after every reconnection.
    if (Pusher) echo.connector.signin();
    const socket = Pusher ? pusherSocket(echo.connector.pusher) : echo.connector.socket;

    function syncManagerQuery() {
        // socket.io-client 2 reads the query from the Manager's options at each new engine.
        const managerOpts = protocol === 4 && socket.io && socket.io.opts;
        if (managerOpts && managerOpts.query && managerOpts.query !== query
                && typeof managerOpts.query === 'object') {
            if (current) managerOpts.query.token = current;
            else delete managerOpts.query.token;
        }
    }
    syncManagerQuery();
    if (protocol === 4) followRecovery(socket, query);

    function clearTimer() {
        if (refreshTimer !== null) timers.clearTimeout(refreshTimer);
        refreshTimer = null;
    }

    function later(fn, delay) {
        clearTimer();
        refreshTimer = timers.setTimeout(() => {
            refreshTimer = null;
            fn();
        }, Math.min(Math.max(0, delay), MAX_TIMER));
    }

    function schedule(floor = 0) {
        clearTimer();
        if (disposed || !refreshToken || !current) return;
        const expiry = tokenExpiry(current);
        if (expiry === null) return;  // opaque token: renewed only when the server refuses it
        const remaining = expiry - now();
        const lead = Math.min(refreshBefore, Math.max(remaining, 0) / 2);
        // `floor` keeps a callback that hands out nearly expired tokens from spinning.
        later(() => refresh().catch(() => {}), Math.max(remaining - lead, floor));
    }

    function setToken(value, floor = 0) {
        current = value || null;
        refusedForToken = false;
        applyToken(current);
        syncManagerQuery();
        schedule(floor);
    }

    function refresh() {
        if (!refreshToken) return Promise.resolve(current);
        if (inflight) return inflight;
        inflight = (async () => {
            try {
                const fresh = await refreshToken(current);
                if (typeof fresh !== 'string' || !fresh) {
                    throw new Error('refreshToken() did not return a token');
                }
                const expiry = tokenExpiry(fresh);
                if (expiry !== null && expiry <= now()) {
                    throw new Error('refreshToken() returned an expired token');
                }
                if (!disposed) {
                    setToken(fresh, Math.min(refreshRetry, 1000));
                    if (onTokenRefreshed) onTokenRefreshed(fresh);
                }
                return fresh;
            } catch (error) {
                if (onTokenError) onTokenError(error);
                if (!disposed) later(() => refresh().catch(() => {}), refreshRetry);
                throw error;
            } finally {
                inflight = null;
            }
        })();
        return inflight;
    }

    function expired() {
        const expiry = tokenExpiry(current);
        return expiry !== null && expiry <= now();
    }

    /** Await before opening a connection: the token it carries must be worth sending. */
    async function beforeConnect() {
        if (!refreshToken) return;
        try {
            if (inflight) await inflight;
            else if (refusedForToken || expired()) await refresh();
        } catch {
            // Connect anyway: the refusal shows up as a connect error and the retry asks again.
        }
    }

    // A refusal that names the token means the next attempt needs a new one.
    const onRefused = (error) => {
        const message = typeof error === 'string' ? error : (error && error.message) || '';
        if (AUTH_ERROR.test(message)) refusedForToken = true;
    };
    socket.on('connect_error', onRefused);
    socket.on('error', onRefused);  // socket.io-client 2 reports a refused handshake this way

    schedule();

    return {
        echo,
        socket,
        protocol,
        get token() { return current; },
        setToken,
        refresh,
        beforeConnect,
        socketId: () => echo.socketId(),
        dispose() {
            if (disposed) return;
            disposed = true;
            clearTimer();
            socket.off('connect_error', onRefused);
            socket.off('error', onRefused);
            echo.disconnect();
        },
    };
}
