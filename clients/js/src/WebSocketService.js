// The connection of a page to echo-server, with a status you can show.
//
// What the seed's WebSocketService got wrong, and what this one does instead:
// - it said "connected" before any connection existed: here the status changes only on the
//   socket's own events (`connect`, `disconnect`, `connect_error`, `error`; a pusher-js
//   connection gets the same from src/pusherSocket.js);
// - every retry built a new Echo on top of the old one (leaking sockets and listeners): here
//   there is one Echo instance for the service's whole life; a retry re-opens its socket;
// - its "exponential" backoff was linear and stopped for good after five tries: here the
//   delay doubles with jitter up to a ceiling and retries never stop; `retryIn` counts down
//   the seconds to the next attempt so the page can say so;
// - it ignored Echo's resubscription: Echo resubscribes only when socket.io's Manager
//   reconnects by itself (and laravel-echo 1.x with socket.io-client 4 not even then).
//   Reconnection is ours, so the Manager's is off and the service resubscribes every channel
//   exactly once per reconnect, for both stacks (channels created while offline are skipped:
//   their subscribe is still in socket.io's send buffer and goes out on connect);
// - listeners leaked: each `listen`/`join` here returns its own `off`, and a channel is left
//   when its last listener goes.

import { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import { createEcho as defaultCreateEcho } from './echo.js';

export const STATUS = Object.freeze({
    IDLE: 'idle',
    CONNECTING: 'connecting',
    CONNECTED: 'connected',
    DISCONNECTED: 'disconnected',
    STOPPED: 'stopped',
});

const PREFIX = { public: '', private: 'private-', presence: 'presence-' };

export class WebSocketService {
    /**
     * options:
     *   echo        options for createEcho (Echo, io, host, token, refreshToken, echoOptions...)
     *   backoff     {base, factor, max, jitter} (see backoff.js)
     *   createEcho  the factory (tests pass a fake stack through it)
     *   random, timers, now   injectable for tests
     *   window      where `online` is listened for (retry at once when the network is back)
     *   logger      console-like, or null for silence
     */
    constructor(options = {}) {
        this.options = options;
        this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
        this._createEcho = options.createEcho || defaultCreateEcho;
        this._random = options.random || Math.random;
        this._timers = options.timers || globalThis;
        this._now = options.now || (() => Date.now());
        this._window = options.window !== undefined ? options.window
            : (typeof window !== 'undefined' ? window : null);
        this._logger = options.logger === undefined ? console : options.logger;

        this.state = {
            status: STATUS.IDLE,
            attempt: 0,          // consecutive failed attempts since the last connection
            retryAt: null,       // ms epoch of the next automatic attempt, when one is planned
            retryIn: null,       // whole seconds until then (counts down)
            retrying: false,     // an automatic attempt is in flight
            lastError: null,
            socketId: null,
            connectedAt: null,
            reconnects: 0,       // successful reconnections after the first connection
            recovered: false,    // the last connection came back as the same session, with
                                 // what it missed (echo-server's connection-state recovery)
            lastEventAt: null,   // ms epoch of the last event delivered to a listener
        };
        this.connection = null;
        this._watchers = new Set();
        this._channels = new Map();      // full name -> {kind, name, channel, events, presence}
        this._bufferedSubscribes = new Set();
        this._everConnected = false;
        this._retryTimer = null;
        this._ticker = null;
        this._socketHandlers = null;
        this._onOnline = () => {
            if (this.state.status === STATUS.DISCONNECTED) this.reconnectNow();
        };
    }

    // ------------------------------------------------------------------ state

    /** Call `fn(state)` now and on every change; returns the function that stops it. */
    subscribe(fn) {
        this._watchers.add(fn);
        fn(this.state);
        return () => this._watchers.delete(fn);
    }

    _set(patch) {
        this.state = { ...this.state, ...patch };
        for (const fn of [...this._watchers]) {
            try {
                fn(this.state);
            } catch (error) {
                this._log('error', 'realtime: a status watcher failed', error);
            }
        }
    }

    _log(level, ...args) {
        if (this._logger && typeof this._logger[level] === 'function') this._logger[level](...args);
    }

    get echo() {
        return this.connection ? this.connection.echo : null;
    }

    get isConnected() {
        return this.state.status === STATUS.CONNECTED;
    }

    socketId() {
        return this.state.socketId;
    }

    // ------------------------------------------------------------------ lifecycle

    /** Create the one Echo instance and start connecting; later calls do nothing. */
    start() {
        if (this.connection || this.state.status === STATUS.STOPPED) return this;
        const echoOptions = { ...((this.options.echo || {}).echoOptions || {}), reconnection: false };
        this._set({ status: STATUS.CONNECTING });
        this.connection = this._createEcho({ ...(this.options.echo || {}), echoOptions });
        const socket = this.connection.socket;
        this._socketHandlers = {
            connect: () => this._onConnect(),
            disconnect: (reason) => this._onDisconnect(reason),
            connect_error: (error) => this._onFailure(error),
            error: (error) => this._onFailure(error),
            // socket.io-client 2 hears it just after `connect` (echo-server's extension).
            'echo:recovery': (info) => this._set({ recovered: Boolean(info && info.recovered) }),
            subscription_error: (channel, status) => this._log(
                'warn', `realtime: subscription to ${channel} refused (${status})`),
        };
        for (const [event, handler] of Object.entries(this._socketHandlers)) socket.on(event, handler);
        if (this._window && typeof this._window.addEventListener === 'function') {
            this._window.addEventListener('online', this._onOnline);
        }
        if (socket.connected) this._onConnect();  // a stack that connected synchronously
        return this;
    }

    /** Try now (the "Yeniden Bağlan" button): the planned retry is dropped. */
    reconnectNow() {
        if (!this.connection) return this.start();
        if (this.state.status === STATUS.STOPPED || this.connection.socket.connected) return this;
        this._cancelRetry();
        this._set({ status: STATUS.CONNECTING });
        this._attempt().catch((error) => this._onFailure(error));
        return this;
    }

    /** Leave every channel, close the socket, stop retrying. The service is then done. */
    stop() {
        if (this.state.status === STATUS.STOPPED) return;
        this._cancelRetry();
        if (this._window && typeof this._window.removeEventListener === 'function') {
            this._window.removeEventListener('online', this._onOnline);
        }
        if (this.connection) {
            const socket = this.connection.socket;
            for (const name of [...this._channels.keys()]) this._leave(name);
            for (const [event, handler] of Object.entries(this._socketHandlers || {})) {
                socket.off(event, handler);
            }
            this.connection.dispose();
        }
        this._set({ status: STATUS.STOPPED, socketId: null, retryAt: null, retryIn: null,
                    retrying: false });
    }

    _onConnect() {
        const resubscribe = this._everConnected;
        this._everConnected = true;
        this._cancelRetry();
        if (resubscribe) {
            // What Echo does on the Manager's `reconnect`, done once here for both stacks. A
            // recovered socket (socket.io-client >= 4.6) still holds them on the server, which
            // answers these without a second authorization; on socket.io-client 2 they are
            // what brings the channels back.
            const channels = this.connection.echo.connector.channels || {};
            for (const [name, channel] of Object.entries(channels)) {
                if (!this._bufferedSubscribes.has(name)) channel.subscribe();
            }
        }
        this._bufferedSubscribes.clear();
        this._set({
            status: STATUS.CONNECTED, attempt: 0, retrying: false, lastError: null,
            socketId: this.connection.socketId() || null, connectedAt: this._now(),
            reconnects: this.state.reconnects + (resubscribe ? 1 : 0),
            recovered: this.connection.socket.recovered === true,
        });
    }

    _onDisconnect(reason) {
        if (this.state.status === STATUS.STOPPED) return;
        this._forgetMembers();
        if (reason === 'io client disconnect') {
            // Someone called echo.disconnect() directly: respect it, offer the button.
            this._cancelRetry();
            this._set({ status: STATUS.DISCONNECTED, socketId: null, retrying: false });
            return;
        }
        this._failed({ socketId: null, lastError: reason || this.state.lastError });
    }

    _onFailure(error) {
        if (this.state.status === STATUS.STOPPED || this.connection.socket.connected) return;
        const message = typeof error === 'string' ? error : (error && error.message) || 'error';
        this._failed({ lastError: message });
    }

    /** An attempt failed or the connection dropped: plan the next attempt (once). */
    _failed(patch) {
        if (this._retryTimer !== null) {  // `error` and `disconnect` of one failure
            this._set(patch);
            return;
        }
        const delay = backoffDelay(this.state.attempt, this.backoff, this._random);
        const retryAt = this._now() + delay;
        this._set({
            ...patch, status: STATUS.DISCONNECTED, attempt: this.state.attempt + 1,
            retrying: false, retryAt, retryIn: Math.ceil(delay / 1000),
        });
        this._log('info', `realtime: disconnected (${this.state.lastError}); retrying in `
            + `${(delay / 1000).toFixed(1)} s (attempt ${this.state.attempt})`);
        this._retryTimer = this._timers.setTimeout(() => {
            this._retryTimer = null;
            this._stopTicker();
            this._set({ retryAt: null, retryIn: null, retrying: true });
            this._attempt().catch((error) => this._onFailure(error));
        }, delay);
        this._ticker = this._timers.setInterval(() => {
            if (this.state.retryAt === null) return;
            const left = Math.max(0, Math.ceil((this.state.retryAt - this._now()) / 1000));
            if (left !== this.state.retryIn) this._set({ retryIn: left });
        }, 250);
    }

    async _attempt() {
        const connection = this.connection;
        await connection.beforeConnect();
        if (this.connection !== connection || this.state.status === STATUS.STOPPED) return;
        if (!connection.socket.connected) connection.socket.connect();
    }

    _stopTicker() {
        if (this._ticker !== null) this._timers.clearInterval(this._ticker);
        this._ticker = null;
    }

    _cancelRetry() {
        if (this._retryTimer !== null) this._timers.clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._stopTicker();
        if (this.state.retryAt !== null || this.state.retryIn !== null) {
            this._set({ retryAt: null, retryIn: null });
        }
    }

    // ------------------------------------------------------------------ channels

    _entry(kind, name) {
        if (!(kind in PREFIX)) throw new Error(`unknown channel kind ${kind}`);
        if (!this.connection) this.start();
        // Echo adds the prefix itself: `private('admin-dashboard.5')` is
        // `private-admin-dashboard.5` (the seed kept the bare name and then left the wrong one).
        const bare = name.startsWith(PREFIX[kind]) && kind !== 'public'
            ? name.slice(PREFIX[kind].length) : name;
        const full = PREFIX[kind] + bare;
        let entry = this._channels.get(full);
        if (!entry) {
            const echo = this.connection.echo;
            const existed = Boolean((echo.connector.channels || {})[full]);
            const channel = kind === 'public' ? echo.channel(bare)
                : kind === 'private' ? echo.private(bare) : echo.join(bare);
            if (!existed && !this.connection.socket.connected) this._bufferedSubscribes.add(full);
            entry = { kind, name: bare, full, channel, events: new Map(), presence: null };
            this._channels.set(full, entry);
        }
        return entry;
    }

    /**
     * Listen to `event` (Echo's naming: '.lead.assigned' for a broadcastAs name) on a
     * channel of `kind` ('public' | 'private' | 'presence'). Returns `off()`.
     */
    listen(kind, name, event, callback) {
        const entry = this._entry(kind, name);
        let callbacks = entry.events.get(event);
        if (!callbacks) {
            callbacks = new Set();
            const dispatch = (data) => {
                this._set({ lastEventAt: this._now() });
                for (const cb of [...callbacks]) this._call(cb, data);
            };
            callbacks.dispatch = dispatch;
            entry.events.set(event, callbacks);
            entry.channel.listen(event, dispatch);
        }
        const token = (data) => callback(data);  // one registration, even for the same function
        callbacks.add(token);
        return this._off(entry, () => {
            callbacks.delete(token);
            if (callbacks.size === 0 && entry.events.get(event) === callbacks) {
                entry.events.delete(event);
                entry.channel.stopListening(event, callbacks.dispatch);
            }
        });
    }

    /** Listen to whispers (`client-<event>`) on a private or presence channel. */
    listenForWhisper(kind, name, event, callback) {
        return this.listen(kind, name, `.client-${event}`, callback);
    }

    whisper(kind, name, event, data) {
        this._entry(kind, name).channel.whisper(event, data);
    }

    /**
     * Join a presence channel. `handlers.members(list)` gets the whole member list on every
     * change (joining, leaving, the full list again after each resubscription, and an empty
     * list when the connection drops: offline, who is here is unknown);
     * `here`, `joining`, `leaving` are Echo's callbacks. Returns `off()`.
     */
    join(name, handlers = {}) {
        const entry = this._entry('presence', name);
        if (!entry.presence) {
            const presence = { members: [], watchers: new Set() };
            entry.presence = presence;
            const key = (user) => JSON.stringify(user && typeof user === 'object' && 'id' in user
                ? user.id : user);
            const emit = (kind, arg) => {
                for (const w of [...presence.watchers]) {
                    if (w[kind]) this._call(w[kind], arg);
                    if (w.members) this._call(w.members, presence.members);
                }
            };
            entry.channel
                .here((users) => {
                    presence.members = [...users];
                    emit('here', presence.members);
                })
                .joining((user) => {
                    presence.members = [...presence.members.filter((u) => key(u) !== key(user)),
                                        user];
                    emit('joining', user);
                })
                .leaving((user) => {
                    presence.members = presence.members.filter((u) => key(u) !== key(user));
                    emit('leaving', user);
                });
        }
        const watcher = { ...handlers };
        entry.presence.watchers.add(watcher);
        if (this._everConnected && this.isConnected && entry.presence.members.length) {
            if (watcher.here) this._call(watcher.here, entry.presence.members);
            if (watcher.members) this._call(watcher.members, entry.presence.members);
        }
        return this._off(entry, () => entry.presence.watchers.delete(watcher));
    }

    /** Offline, nobody is known to be here; the resubscription's `here` tells again. */
    _forgetMembers() {
        for (const entry of this._channels.values()) {
            if (!entry.presence || entry.presence.members.length === 0) continue;
            entry.presence.members = [];
            for (const w of [...entry.presence.watchers]) if (w.members) this._call(w.members, []);
        }
    }

    /** Members currently known on a joined presence channel. */
    members(name) {
        const entry = this._channels.get(`presence-${name.replace(/^presence-/, '')}`);
        return entry && entry.presence ? [...entry.presence.members] : [];
    }

    _call(callback, arg) {
        try {
            callback(arg);
        } catch (error) {
            this._log('error', 'realtime: a listener failed', error);
        }
    }

    /** An idempotent `off` that leaves the channel when nothing listens on it any more. */
    _off(entry, remove) {
        let done = false;
        return () => {
            if (done) return;
            done = true;
            remove();
            const live = this._channels.get(entry.full) === entry;
            const idle = entry.events.size === 0
                && (!entry.presence || entry.presence.watchers.size === 0);
            if (live && idle) this._leave(entry.full);
        };
    }

    _leave(full) {
        const entry = this._channels.get(full);
        if (!entry) return;
        this._channels.delete(full);
        this._bufferedSubscribes.delete(full);
        // leaveChannel takes the full name; Echo's leave('x') would also drop 'private-x'
        // and 'presence-x' that other parts of the page may still use.
        if (this.connection) this.connection.echo.leaveChannel(full);
    }

    /** Full names of the channels this service holds (for tests and the status line). */
    channelNames() {
        return [...this._channels.keys()];
    }
}
