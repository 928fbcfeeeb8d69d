#!/usr/bin/env node
// JSON-lines driver around a real laravel-echo + socket.io-client stack.
//
// pytest (tests/support/node_client.py) spawns one of these per simulated browser tab. Everything
// reported on stdout comes from the public API a Laravel frontend uses (Echo channels, listen,
// listenForWhisper, here/joining/leaving, socketId, the socket's connect/disconnect events), so a
// test that passes here passes for a real app. The only deliberate exceptions are
// `subscription_error` (Echo ignores it, so it is read off the raw socket) and the opt-in `--raw`
// trace. See README.md for the command and message reference.

import { readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createInterface } from 'node:readline';

const STACKS = {
    // laravel-echo 1.x is CommonJS; importing it from ESM yields the exports object, so the class
    // is `.default.default`. laravel-echo 2.x is a real ES module.
    'echo1-sio2': { echo: 'laravel-echo-1', io: 'socket.io-client-2' },
    'echo2-sio2': { echo: 'laravel-echo-2', io: 'socket.io-client-2' },
    'echo2-sio4': { echo: 'laravel-echo-2', io: 'socket.io-client-4' },
    // Not a supported frontend combination for the reference, but real apps run it against
    // socket.io 4 servers: Echo 1 listens for `reconnect` on the Socket, which socket.io-client 4
    // no longer emits there, so it never resubscribes after a reconnect.
    'echo1-sio4': { echo: 'laravel-echo-1', io: 'socket.io-client-4' },
    // Echo's Pusher connector over pusher-js: what `php artisan install:broadcasting` sets up
    // (`reverb`), and the `pusher` broadcaster pointed at this server. Needs --key (the app's
    // public key) and --auth-endpoint (the app's /broadcasting/auth, which signs).
    'echo2-reverb': { echo: 'laravel-echo-2', pusher: 'pusher-js', broadcaster: 'reverb' },
    'echo2-pusher': { echo: 'laravel-echo-2', pusher: 'pusher-js', broadcaster: 'pusher' },
};

function out(obj) {
    process.stdout.write(JSON.stringify(obj, (_k, v) => (v === undefined ? null : v)) + '\n');
}

function errorMessage(err) {
    if (err instanceof Error) return err.message;
    if (err && typeof err === 'object') {
        try {
            return JSON.stringify(err);
        } catch {
            return String(err);
        }
    }
    return String(err);
}

function usage(msg) {
    process.stderr.write(
        `${msg}\nusage: node echo_client.mjs --stack ${Object.keys(STACKS).join('|')} --url URL ` +
            '[--transports websocket|polling|polling,websocket] [--query k=v]... [--auth-token T] ' +
            '[--csrf-token T] [--auth-header K=V]... [--extra-header K=V]... ' +
            '[--reconnection true|false] [--reconnection-delay MS] [--reconnection-delay-max MS] ' +
            '[--randomization-factor F] [--timeout MS] [--namespace NS] [--echo-option K=JSON]... ' +
            '[--local-address ADDR] [--raw]\n',
    );
    process.exit(2);
}

function parseArgs(argv) {
    const opts = {
        query: {},
        authHeaders: {},
        extraHeaders: {},
        echoOptions: {},
        raw: false,
    };
    const needValue = (i) => {
        if (i + 1 >= argv.length) usage(`missing value for ${argv[i]}`);
        return argv[i + 1];
    };
    const kv = (s, sep = '=') => {
        const at = s.indexOf(sep);
        if (at < 1) usage(`expected KEY${sep}VALUE, got ${s}`);
        return [s.slice(0, at), s.slice(at + 1)];
    };
    const num = (s) => {
        const n = Number(s);
        if (!Number.isFinite(n)) usage(`not a number: ${s}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        switch (a) {
            case '--stack': opts.stack = needValue(i); i++; break;
            case '--url': opts.url = needValue(i); i++; break;
            case '--transports': opts.transports = needValue(i).split(',').filter(Boolean); i++; break;
            case '--query': { const [k, v] = kv(needValue(i)); opts.query[k] = v; i++; break; }
            case '--auth-token': opts.bearerToken = needValue(i); i++; break;
            case '--csrf-token': opts.csrfToken = needValue(i); i++; break;
            case '--auth-header': { const [k, v] = kv(needValue(i)); opts.authHeaders[k] = v; i++; break; }
            case '--extra-header': { const [k, v] = kv(needValue(i)); opts.extraHeaders[k] = v; i++; break; }
            case '--reconnection': {
                const v = needValue(i); i++;
                if (v !== 'true' && v !== 'false') usage('--reconnection takes true or false');
                opts.reconnection = v === 'true';
                break;
            }
            case '--reconnection-delay': opts.reconnectionDelay = num(needValue(i)); i++; break;
            case '--reconnection-delay-max': opts.reconnectionDelayMax = num(needValue(i)); i++; break;
            case '--randomization-factor': opts.randomizationFactor = num(needValue(i)); i++; break;
            case '--timeout': opts.timeout = num(needValue(i)); i++; break;
            case '--local-address': opts.localAddress = needValue(i); i++; break;
            case '--namespace': opts.namespace = needValue(i); i++; break;
            case '--echo-option': {
                const [k, v] = kv(needValue(i)); i++;
                try {
                    opts.echoOptions[k] = JSON.parse(v);
                } catch {
                    usage(`--echo-option ${k}: value is not JSON: ${v}`);
                }
                break;
            }
            case '--raw': opts.raw = true; break;
            case '--key': opts.key = needValue(i); i++; break;
            case '--auth-endpoint': opts.authEndpoint = needValue(i); i++; break;
            case '-h': case '--help': usage('');
            // falls through (usage exits)
            default: usage(`unknown argument ${a}`);
        }
    }
    if (!opts.stack || !STACKS[opts.stack]) usage(`--stack must be one of ${Object.keys(STACKS).join(', ')}`);
    if (!opts.url) usage('--url is required');
    return opts;
}

function packageVersion(alias) {
    // Read the file directly: socket.io-client 4's `exports` map does not expose package.json.
    const url = new URL(`./node_modules/${alias}/package.json`, import.meta.url);
    return JSON.parse(readFileSync(url, 'utf8')).version;
}

async function loadStack(name) {
    const spec = STACKS[name];
    const echoMod = await import(spec.echo);
    let Echo = echoMod.default;
    if (Echo && typeof Echo !== 'function' && typeof Echo.default === 'function') Echo = Echo.default;
    if (spec.pusher) {
        const pusherMod = await import(spec.pusher);
        const Pusher = pusherMod.default?.default ?? pusherMod.default ?? pusherMod.Pusher;
        return { Echo, Pusher, ioVersion: packageVersion(spec.pusher), echoVersion: packageVersion(spec.echo) };
    }
    const ioMod = await import(spec.io);
    // socket.io-client 2 exports the lookup function as the CJS module itself; 4 has a named `io`.
    const io = typeof ioMod.io === 'function' ? ioMod.io : ioMod.default;
    return { Echo, io, ioVersion: packageVersion(spec.io), echoVersion: packageVersion(spec.echo) };
}

function buildEchoOptions(opts, io) {
    const o = {
        broadcaster: 'socket.io',
        host: opts.url,
        client: io,
        // This is a test process, not a page: never let Echo look for axios/jQuery/Turbo globals.
        withoutInterceptors: true,
    };
    // Echo passes its whole options object to io(host, options), so socket.io-client options are
    // given here exactly as a Laravel app would put them in `new Echo({...})`.
    if (opts.transports) o.transports = opts.transports;
    if (Object.keys(opts.query).length) o.query = opts.query;
    if (Object.keys(opts.extraHeaders).length) o.extraHeaders = opts.extraHeaders;
    if (opts.reconnection !== undefined) o.reconnection = opts.reconnection;
    if (opts.reconnectionDelay !== undefined) o.reconnectionDelay = opts.reconnectionDelay;
    if (opts.reconnectionDelayMax !== undefined) o.reconnectionDelayMax = opts.reconnectionDelayMax;
    if (opts.randomizationFactor !== undefined) o.randomizationFactor = opts.randomizationFactor;
    if (opts.timeout !== undefined) o.timeout = opts.timeout;
    // Every request (each poll, the upgrade) from this address: what a browser's machine is
    // to a server that picks the worker by the client's address.
    if (opts.localAddress !== undefined) o.agent = new Agent({ localAddress: opts.localAddress });
    if (opts.namespace !== undefined) o.namespace = opts.namespace;
    if (opts.bearerToken !== undefined) o.bearerToken = opts.bearerToken;
    if (opts.csrfToken !== undefined) o.csrfToken = opts.csrfToken;
    // A fresh auth object per process: Echo 2 spreads a static default whose headers it mutates.
    o.auth = { headers: { ...opts.authHeaders } };
    return { ...o, ...opts.echoOptions };
}

function pusherEchoOptions(opts, spec, Pusher) {
    const url = new URL(opts.url);
    return {
        broadcaster: spec.broadcaster,
        key: opts.key,
        cluster: '',
        wsHost: url.hostname,
        wsPort: Number(url.port),
        wssPort: Number(url.port),
        forceTLS: false,
        enabledTransports: ['ws'],
        authEndpoint: opts.authEndpoint,
        auth: { headers: { ...opts.authHeaders } },
        Pusher,
        ...opts.echoOptions,
    };
}

// What the page sees of a pusher-js connection, as the socket.io lines say it.
function attachPusherReporting(echo) {
    const connection = echo.connector.pusher.connection;
    connection.bind('connected', () => out({ type: 'connected', socketId: echo.socketId() ?? null, recovered: null }));
    connection.bind('disconnected', () => out({ type: 'disconnected', reason: 'disconnected' }));
    connection.bind('error', (err) => out({ type: 'connect_error', message: errorMessage(err?.error ?? err) }));
}

function attachSocketReporting(socket, raw) {
    // `recovered` (socket.io-client >= 4.6): the server gave back the same session, with what
    // was missed (connection-state recovery); undefined on older clients.
    socket.on('connect', () => out({
        type: 'connected', socketId: socket.id ?? null, recovered: socket.recovered ?? null,
    }));
    socket.on('disconnect', (reason) => out({ type: 'disconnected', reason: reason ?? null }));
    socket.on('connect_error', (err) => {
        const msg = { type: 'connect_error', message: errorMessage(err) };
        if (err && typeof err === 'object') {
            if (err.description !== undefined) msg.description = errorMessage(err.description);
            if (err.type !== undefined) msg.errorType = err.type;
        }
        out(msg);
    });
    // socket.io-client 2 reports a refused connect (error packet `44"message"`) as 'error'.
    socket.on('error', (err) => out({ type: 'socket_error', message: errorMessage(err) }));
    // socket.io-client 2 only; 4 reports a timeout as a connect_error.
    socket.on('connect_timeout', (ms) => out({ type: 'connect_error', message: 'timeout', timeout: ms ?? null }));
    // Echo ignores this (channel.error() is a no-op for socket.io), so read it off the socket.
    socket.on('subscription_error', (channel, status) => out({ type: 'subscription_error', channel, status }));

    // Reconnection bookkeeping lives on the Manager in both client generations (socket.io-client 2
    // re-emits it on the Socket too, so listening on both would duplicate every line).
    const manager = socket.io;
    manager.on('reconnect_attempt', (attempt) => out({ type: 'reconnect_attempt', attempt: attempt ?? null }));
    manager.on('reconnect', (attempt) => out({ type: 'reconnect', attempt: attempt ?? null }));
    manager.on('reconnect_failed', () => out({ type: 'reconnect_failed' }));

    if (raw) {
        const report = (args) => out({ type: 'raw', event: args[0] ?? null, args: args.slice(1) });
        if (typeof socket.onAny === 'function') {
            socket.onAny((...args) => report(args.filter((a) => typeof a !== 'function')));
        } else {
            // socket.io-client 2 has no onAny; observe packets where the Socket dispatches them.
            const orig = socket.onevent;
            socket.onevent = function onevent(packet) {
                report([...(packet.data || [])]);
                return orig.call(this, packet);
            };
        }
    }
}

function findChannel(echo, name) {
    const channels = echo.connector.channels;
    for (const candidate of [name, `private-${name}`, `presence-${name}`]) {
        if (channels[candidate]) return channels[candidate];
    }
    return null;
}

function listenAll(channel, cmd) {
    // Pusher channels report a refused subscription here (socket.io ones never call it).
    channel.error((err) => out({ type: 'subscription_error', channel: channel.name, status: err?.status ?? null }));
    for (const ev of cmd.listen ?? []) {
        channel.listen(ev, (data) => out({ type: 'event', channel: channel.name, event: ev, data }));
    }
    for (const ev of cmd.whisper_listen ?? []) {
        channel.listenForWhisper(ev, (data) => out({ type: 'whisper', channel: channel.name, event: ev, data }));
    }
    if (cmd.notifications) {
        channel.notification((data) => out({ type: 'notification', channel: channel.name, data }));
    }
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const { Echo, io, Pusher, ioVersion, echoVersion } = await loadStack(opts.stack);
    const spec = STACKS[opts.stack];

    // A browser keeps running after an exception in an event handler; so does this driver, and the
    // test sees the exception as an `error` line instead of a vanished process.
    process.on('uncaughtException', (err) => out({ type: 'error', message: errorMessage(err), source: 'uncaughtException' }));
    process.on('unhandledRejection', (err) => out({ type: 'error', message: errorMessage(err), source: 'unhandledRejection' }));

    const echo = new Echo(spec.pusher ? pusherEchoOptions(opts, spec, Pusher) : buildEchoOptions(opts, io));
    const socket = echo.connector.socket;  // undefined on a Pusher stack
    if (spec.pusher) attachPusherReporting(echo);
    else attachSocketReporting(socket, opts.raw);
    out({ type: 'ready', stack: opts.stack, echoVersion, ioVersion });

    let exiting = false;
    const exit = (code) => {
        if (exiting) return;
        exiting = true;
        try {
            if (socket) socket.io.reconnection(false);
            echo.disconnect();
        } catch {
            // Nothing useful to report while leaving.
        }
        process.stdout.write('', () => process.exit(code));
    };

    const handlers = {
        channel(cmd) {
            listenAll(echo.channel(cmd.channel), cmd);
        },
        private(cmd) {
            listenAll(echo.private(cmd.channel), cmd);
        },
        encrypted(cmd) {
            // Echo's encryptedPrivate (Pusher stacks): pusher-js decrypts with the shared
            // secret the app's /broadcasting/auth hands it; the server only relays.
            listenAll(echo.encryptedPrivate(cmd.channel), cmd);
        },
        join(cmd) {
            const ch = echo.join(cmd.channel);
            ch.here((users) => out({ type: 'presence_here', channel: ch.name, users }));
            ch.joining((user) => out({ type: 'presence_joining', channel: ch.name, user }));
            ch.leaving((user) => out({ type: 'presence_leaving', channel: ch.name, user }));
            listenAll(ch, cmd);
        },
        leave(cmd) {
            echo.leave(cmd.channel);
        },
        leave_channel(cmd) {
            echo.leaveChannel(cmd.channel);
        },
        whisper(cmd) {
            const ch = findChannel(echo, cmd.channel);
            if (!ch) throw new Error(`no joined channel named ${cmd.channel}`);
            if (typeof ch.whisper !== 'function') throw new Error(`${ch.name} is public; Echo cannot whisper on it`);
            ch.whisper(cmd.event, cmd.data);
        },
        socket_emit(cmd) {
            socket.emit(cmd.event, ...(cmd.args ?? []));
        },
        disconnect() {
            echo.disconnect();
        },
        connect() {
            socket.connect();
        },
        reconnect(cmd) {
            if ((cmd.mode ?? 'drop') === 'manual') {
                // What an app calling disconnect()/connect() gets: a new session, and Echo does
                // NOT resubscribe (it only hooks the Manager's automatic `reconnect`).
                socket.disconnect();
                socket.connect();
            } else {
                // Simulate a network drop: close the engine under the Manager, which then runs its
                // automatic reconnection (after reconnectionDelay), and Echo resubscribes.
                socket.io.engine.close();
            }
        },
        socket_id() {
            out({ type: 'socket_id', socketId: echo.socketId() ?? null });
        },
        status() {
            out({
                type: 'status',
                connected: socket.connected,
                socketId: echo.socketId() ?? null,
                channels: Object.keys(echo.connector.channels),
                connectionStatus: typeof echo.connectionStatus === 'function' ? echo.connectionStatus() : null,
            });
        },
        exit() {
            exit(0);
        },
    };

    const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
    rl.on('line', (line) => {
        if (!line.trim()) return;
        let cmd;
        try {
            cmd = JSON.parse(line);
        } catch (err) {
            out({ type: 'error', message: `bad command JSON: ${errorMessage(err)}`, line });
            return;
        }
        const id = cmd.id ?? null;
        const handler = handlers[cmd.cmd];
        if (!handler) {
            out({ type: 'error', message: `unknown cmd ${JSON.stringify(cmd.cmd)}`, id });
            out({ type: 'ack', id, ok: false });
            return;
        }
        if (cmd.cmd === 'exit') out({ type: 'ack', id, ok: true });
        try {
            handler(cmd);
        } catch (err) {
            out({ type: 'error', message: errorMessage(err), id });
            out({ type: 'ack', id, ok: false });
            return;
        }
        if (cmd.cmd !== 'exit') out({ type: 'ack', id, ok: true });
    });
    // The parent went away (or closed our stdin): do not linger as an orphan client.
    rl.on('close', () => exit(0));
}

main().catch((err) => {
    out({ type: 'error', message: errorMessage(err), source: 'startup' });
    process.exitCode = 1;
});
