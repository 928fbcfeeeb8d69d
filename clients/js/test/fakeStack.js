// A socket.io-client stand-in that real laravel-echo (1.x or 2.x) drives, so the service's
// tests exercise Echo's own channel bookkeeping. The test plays the server: `accept()`,
// `drop(reason)`, `refuse(message)`, `deliver(event, channel, data)`.
// Like socket.io-client, emits while disconnected are buffered and flushed on connect, before
// the `connect` event.

class Emitter {
    constructor() { this.handlers = new Map(); }
    on(event, fn) {
        if (!this.handlers.has(event)) this.handlers.set(event, []);
        this.handlers.get(event).push(fn);
        return this;
    }
    off(event, fn) {
        const list = this.handlers.get(event) || [];
        const index = list.indexOf(fn);
        if (index >= 0) list.splice(index, 1);
        return this;
    }
    removeListener(event, fn) { return this.off(event, fn); }
    fire(event, ...args) {
        for (const fn of [...(this.handlers.get(event) || [])]) fn(...args);
    }
    count(event) { return (this.handlers.get(event) || []).length; }
}

export class FakeSocket extends Emitter {
    constructor(host, opts) {
        super();
        this.host = host;
        this.opts = opts;
        this.io = new Emitter();
        this.io.opts = opts;
        this.connected = false;
        this.id = undefined;
        this.sent = [];          // packets that reached the "server"
        this.buffer = [];
        this.connectCalls = 0;   // explicit socket.connect() calls (autoConnect not counted)
        this.handshakes = [];    // the token each connection attempt carried
        this._nextId = 1;
        this.handshakes.push(this.currentToken());
    }
    currentToken() {
        return this.opts.auth?.token ?? this.opts.query?.token ?? null;
    }
    emit(event, ...args) {
        const packet = { event, args: JSON.parse(JSON.stringify(args)) };
        if (this.connected) this.sent.push(packet);
        else this.buffer.push(packet);
        return this;
    }
    connect() {
        this.connectCalls += 1;
        this.handshakes.push(this.currentToken());
        return this;
    }
    disconnect() {
        if (this.connected) {
            this.connected = false;
            this.id = undefined;
            this.fire('disconnect', 'io client disconnect');
        }
        return this;
    }
    // socket.io-client 2's dispatch of an event packet (the kit wraps it to read offsets)
    onevent(packet) {
        this.fire(...packet.data);
    }
    // --- the server's side
    accept(id = `sock${this._nextId++}`, { recovered = false } = {}) {
        this.connected = true;
        this.id = id;
        this.recovered = recovered;  // socket.io-client >= 4.6: the server gave the session back
        this.sent.push(...this.buffer);
        this.buffer = [];
        this.fire('connect');
    }
    drop(reason = 'transport close') {
        this.connected = false;
        this.id = undefined;
        this.fire('disconnect', reason);
    }
    refuse(message = 'xhr poll error') {
        this.fire('connect_error', new Error(message));
    }
    deliver(event, channel, data) {
        this.fire(event, channel, data);
    }
    subscribes() {
        return this.sent.filter((p) => p.event === 'subscribe').map((p) => p.args[0].channel);
    }
    unsubscribes() {
        return this.sent.filter((p) => p.event === 'unsubscribe').map((p) => p.args[0].channel);
    }
}

/** A fake `io`; `protocol: 4` makes it look like socket.io-client 2.x. */
export function fakeIo(protocol = 5) {
    const sockets = [];
    const io = (host, opts) => {
        const socket = new FakeSocket(host, opts);
        sockets.push(socket);
        return socket;
    };
    if (protocol === 4) io.protocol = 4;
    io.sockets = sockets;
    return io;
}

/** A JWT-shaped token (unsigned: only the client reads it) expiring at `exp` (seconds). */
export function jwt(exp, extra = {}) {
    const encode = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
    return `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ exp, ...extra })}.sig`;
}

/**
 * A pusher-js stand-in that laravel-echo 2's `reverb` connector drives (`Pusher` option), in
 * pusher-js's order: a state change fires `state_change`, then the state's own event;
 * `connect()` announces `connecting` before it arms the attempt; Pusher's own `connected`
 * handler (bound first) resubscribes every channel; `connecting`/`disconnected` mark them
 * unsubscribed. Once `signin()` was called, every transition to `connected` asks the
 * user-auth endpoint (recorded in `signins`), as pusher-js's UserFacade does.
 * The test plays the server: `accept(id)`, `drop(code)` (the connection is
 * lost and pusher-js plans a retry of its own), `retryAtOnce()` (pusher-js's answer to a
 * 4200 close), `refuse(code, message)` (during the handshake),
 * `unavailable()` (pusher-js gives the attempt up, and would go on trying), `succeed(channel)`.
 */
export class FakePusher {
    constructor(key, options) {
        this.key = key;
        this.options = options;
        this.connection = new Emitter();
        this.connection.state = 'initialized';
        this.connection.socket_id = undefined;
        this.connection.bind = this.connection.on;
        this.connection.unbind = this.connection.off;
        this.channels = { channels: {} };
        this.sent = [];            // messages that reached the "server"
        this.attempting = false;   // a connection attempt of pusher-js's is running
        this.ownRetry = false;     // pusher-js planned a retry of its own
        this.connectCalls = 0;
        this.signinRequested = false;
        this.signins = [];         // {socketId, endpoint, headers} of each user-auth request
        this.connection.bind('state_change', ({ previous, current }) => {
            if (previous !== 'connected' && current === 'connected') this._signin();
        });
        this.connection.bind('connected', () => {
            for (const name of Object.keys(this.channels.channels)) this.subscribe(name);
        });
        for (const state of ['connecting', 'disconnected']) {
            this.connection.bind(state, () => {
                for (const channel of Object.values(this.channels.channels)) channel.subscribed = channel.pending = false;
            });
        }
        this.connect();  // pusher-js connects on construction
    }
    _update(state, data) {
        const previous = this.connection.state;
        this.connection.state = state;
        if (previous === state) return;
        this.connection.fire('state_change', { previous, current: state });
        this.connection.fire(state, data);
    }
    connect() {
        if (this.attempting || this.connection.state === 'connected') return;
        this.connectCalls += 1;
        this._update('connecting');
        this.attempting = true;  // after the announcement, as pusher-js does
    }
    disconnect() {
        this.attempting = false;
        this.ownRetry = false;
        this._update('disconnected');
    }
    subscribe(name) {
        if (!this.channels.channels[name]) {
            const channel = new Emitter();
            Object.assign(channel, { name, subscribed: false, pending: false });
            channel.bind = channel.on;
            channel.unbind = channel.off;
            channel.bind_global = () => channel;
            channel.trigger = (event, data) => this.sent.push({ event, channel: name, data });
            this.channels.channels[name] = channel;
        }
        const channel = this.channels.channels[name];
        if (this.connection.state === 'connected' && !channel.subscribed && !channel.pending) {
            channel.pending = true;
            this.sent.push({ event: 'pusher:subscribe', channel: name });
        }
        return channel;
    }
    unsubscribe(name) {
        delete this.channels.channels[name];
        if (this.connection.state === 'connected') this.sent.push({ event: 'pusher:unsubscribe', channel: name });
    }
    signin() {
        if (this.signinRequested) return;
        this.signinRequested = true;
        this._signin();
    }
    _signin() {
        if (!this.signinRequested || this.connection.state !== 'connected') return;
        const { endpoint, headers } = this.options.userAuthentication;
        this.signins.push({ socketId: this.connection.socket_id, endpoint, headers: { ...headers } });
    }
    // socket.io-client 2's dispatch of an event packet (the kit wraps it to read offsets)
    onevent(packet) {
        this.fire(...packet.data);
    }
    // --- the server's side
    accept(id = '1234.5678') {
        this.attempting = false;
        this.connection.socket_id = id;
        this._update('connected', { socket_id: id });
    }
    drop(code = 1006) {
        this.connection.fire('error', { type: 'PusherError', data: { code } });
        this.connection.fire('connecting_in', 1);
        this.ownRetry = true;
    }
    retryAtOnce() {
        this.attempting = false;
        this._update('connecting');
        this.attempting = true;
    }
    refuse(code, message) {
        this.connection.fire('error', { type: 'WebSocketError', error: { type: 'PusherError', data: { code, message } } });
        this.disconnect();
    }
    unavailable() {
        this._update('unavailable');
    }
    succeed(name) {
        const channel = this.channels.channels[name];
        channel.pending = false;
        channel.subscribed = true;
        channel.fire('pusher:subscription_succeeded', { members: {} });
    }
    subscribes() {
        return this.sent.filter((m) => m.event === 'pusher:subscribe').map((m) => m.channel);
    }
}
