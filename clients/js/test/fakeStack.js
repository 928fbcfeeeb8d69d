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
