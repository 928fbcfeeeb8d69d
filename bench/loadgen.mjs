#!/usr/bin/env node
// One load-generator worker for bench/run.py: N real socket.io-client connections (2.5.0 or 4.x),
// each subscribed to its channel the way Laravel Echo does it on the wire
// (`emit('subscribe', {channel, auth: {headers: {}}})`), counting what arrives and how late.
//
// Control is JSON lines: commands on stdin, one answer line per command on stdout.
//
//   {"cmd":"connect","rate":0,"timeout_ms":60000}
//        open every client (rate 0: all at once, a storm; else that many per second) and answer
//        {"type":"connected", ok, failed, upgraded, errors, ms} once each one is connected,
//        subscribed (and upgraded to websocket, with --transport polling-upgrade) or failed.
//   {"cmd":"stats"}   -> {"type":"stats", received, ready, connected, upgraded, disconnects}
//   {"cmd":"reset"}   -> zero the event counters and the latency histogram
//   {"cmd":"report","expected":{"channel":n,...}} or {"cmd":"report","expected_all":n}
//        -> {"type":"report", ...}: per-client loss against what was published, latency histogram
//   {"cmd":"churn","subscribes":N,"connections":M,"drops":D}
//        from now on, N times a second one client leaves its extra channel and joins a new one
//        (a name never used before), M times a second a short-lived client connects,
//        subscribes and closes a second later, and D times a second one does the same but
//        drops instead of closing (its transport closed without a goodbye, as a network drop
//        ends it: with recovery on, the server parks it); zeros stop it. Answers
//        {"type":"churn", ...} with what was done so far. The clients' own channels and
//        counters are untouched.
//   {"cmd":"exit"}    -> close everything and exit (EOF on stdin and SIGTERM do the same)
//
// SIGUSR2 writes a `stats` line without being asked.
//
// Latency: the publisher stamps `data.sent_ns` with Python's time.monotonic_ns(); here
// process.hrtime.bigint() is read when the event handler runs. On Linux both are
// clock_gettime(CLOCK_MONOTONIC), so on one machine they share a clock (run.py checks it).
// The figure is Redis PUBLISH -> this client's handler, including this worker's own queueing.

import { Agent } from 'node:http';
import { createInterface } from 'node:readline';

const USAGE = 'usage: node loadgen.mjs --url URL --version 2|4|pusher|pusher-raw [--key K] ' +
    '--clients N ' +
    '[--transport websocket|polling|polling-upgrade] [--channel NAME | --channel-template T] ' +
    '[--offset I] [--event lead.assigned] [--ready-event bench.ready] [--local-address ADDR]';

function parseArgs(argv) {
    const opts = {
        url: null, version: '4', clients: 0, transport: 'websocket', channel: 'bench',
        channelTemplate: null, offset: 0, event: 'lead.assigned', readyEvent: 'bench.ready',
    };
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i];
        const value = argv[i + 1];
        if (value === undefined) fail(`missing value for ${key}`);
        switch (key) {
            case '--url': opts.url = value; break;
            case '--version': opts.version = value; break;
            case '--clients': opts.clients = Number(value); break;
            case '--transport': opts.transport = value; break;
            case '--channel': opts.channel = value; break;
            case '--channel-template': opts.channelTemplate = value; break;
            case '--offset': opts.offset = Number(value); break;
            case '--event': opts.event = value; break;
            case '--ready-event': opts.readyEvent = value; break;
            case '--key': opts.key = value; break;
            case '--local-address': opts.localAddress = value; break;
            default: fail(`unknown option ${key}`);
        }
    }
    if (!opts.url || !['2', '4', 'pusher', 'pusher-raw'].includes(opts.version) ||
        !(opts.clients >= 0) ||
        !['websocket', 'polling', 'polling-upgrade'].includes(opts.transport)) {
        fail('bad arguments');
    }
    return opts;
}

function fail(msg) {
    process.stderr.write(`${msg}\n${USAGE}\n`);
    process.exit(2);
}

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const opts = parseArgs(process.argv.slice(2));
// Every connection from this address (`--workers N` picks the worker by it).
const AGENT = opts.localAddress ? { agent: new Agent({ localAddress: opts.localAddress }) } : {};
// --version pusher: pusher-js 8 (Echo's reverb/pusher broadcasters) with --key; pusher-raw:
// the Pusher protocol on a bare `ws` socket (as light a client as there is, for the rows that
// compare Pusher servers); else socket.io-client 2 or 4.
const RAW = opts.version === 'pusher-raw';
const PUSHER = opts.version === 'pusher' || RAW;
const mod = await import(RAW ? 'ws' : PUSHER ? 'pusher-js'
    : opts.version === '2' ? 'socket.io-client-2' : 'socket.io-client-4');
const io = PUSHER ? null : (mod.io ?? mod.default?.io ?? mod.default);
const Pusher = PUSHER && !RAW ? (mod.default?.default ?? mod.default ?? mod.Pusher) : null;
const WebSocket = RAW ? (mod.default ?? mod.WebSocket) : null;
if (!PUSHER && typeof io !== 'function') fail('cannot find io() in socket.io-client');
if (PUSHER && !opts.key) fail('--version pusher needs --key');

const TRANSPORTS = {
    websocket: ['websocket'],
    polling: ['polling'],
    'polling-upgrade': ['polling', 'websocket'],
};

// -- latency histogram: 50 µs buckets up to 2 s, exact values above ------------------------------
const BUCKET_NS = 50_000;
const BUCKETS = 40_000;
let hist = new Uint32Array(BUCKETS);
let overflow = [];
let latN = 0;
let latSumNs = 0;
let latMinNs = Infinity;
let latMaxNs = 0;
let negative = 0;

function recordLatency(ns) {
    if (ns < 0) {
        negative++;
        return;
    }
    latN++;
    latSumNs += ns;
    if (ns < latMinNs) latMinNs = ns;
    if (ns > latMaxNs) latMaxNs = ns;
    const b = Math.floor(ns / BUCKET_NS);
    if (b < BUCKETS) hist[b]++;
    else overflow.push(ns);
}

// -- clients -----------------------------------------------------------------------------------
const n = opts.clients;
const channels = new Array(n);
for (let i = 0; i < n; i++) {
    channels[i] = opts.channelTemplate
        ? opts.channelTemplate.replaceAll('{i}', String(opts.offset + i))
        : opts.channel;
}
const sockets = new Array(n);
const counts = new Uint32Array(n);
const ready = new Uint8Array(n);
// 0 pending, 1 connected+subscribed (waiting for upgrade), 2 done, 3 failed
const state = new Uint8Array(n);
let received = 0;
let readyCount = 0;
let connectedCount = 0;
let upgradedCount = 0;
let failedCount = 0;
let doneCount = 0;
let disconnects = 0;
const disconnectReasons = {};
const errors = {};
let connectWaiter = null;

function settle(i, to) {
    const before = state[i];
    if (before >= 2) return;
    state[i] = to;
    if (to === 3) failedCount++;
    if (to >= 2) {
        doneCount++;
        if (doneCount === n && connectWaiter) connectWaiter();
    }
}

function onEvent(i, data) {
    const now = Number(process.hrtime.bigint());
    counts[i]++;
    received++;
    if (data && typeof data.sent_ns === 'number') recordLatency(now - data.sent_ns);
}

function onReady(i) {
    if (!ready[i]) {
        ready[i] = 1;
        readyCount++;
    }
}

// A pusher-js client: connected once its channel's subscription succeeded.
function openPusherClient(i) {
    const url = new URL(opts.url);
    const client = new Pusher(opts.key, {
        wsHost: url.hostname, wsPort: Number(url.port), forceTLS: false, cluster: '',
        enabledTransports: ['ws'], disableStats: true,
    });
    sockets[i] = { close: () => client.disconnect(), connected: true, client };
    const channel = client.subscribe(channels[i]);
    channel.bind('pusher:subscription_succeeded', () => {
        connectedCount++;
        settle(i, 2);
    });
    channel.bind('pusher:subscription_error', (err) => {
        errors[String(err?.error ?? 'subscription_error')] = (errors[String(err?.error)] || 0) + 1;
        settle(i, 3);
    });
    client.connection.bind('error', (err) => {
        const msg = String(err?.error?.data?.message ?? err?.type ?? 'error');
        errors[msg] = (errors[msg] || 0) + 1;
        settle(i, 3);
    });
    client.connection.bind('disconnected', () => {
        disconnects++;
        disconnectReasons.disconnected = (disconnectReasons.disconnected || 0) + 1;
    });
    channel.bind(opts.event, (data) => onEvent(i, data));
    channel.bind(opts.readyEvent, () => onReady(i));
}

// A bare Pusher-protocol client: subscribe once connection_established arrives; connected
// once subscription_succeeded does. An event's `data` is JSON text, parsed as pusher-js does.
function openRawPusherClient(i) {
    const url = new URL(opts.url);
    const ws = new WebSocket(`ws://${url.host}/app/${opts.key}?protocol=7&client=js&version=8.4.0`,
        { perMessageDeflate: false, ...AGENT });
    sockets[i] = { close: () => ws.terminate(), connected: true, ws };
    ws.on('message', (raw) => {
        const msg = JSON.parse(raw);
        const event = msg.event;
        if (event === opts.event) {
            onEvent(i, typeof msg.data === 'string' ? JSON.parse(msg.data) : msg.data);
        } else if (event === opts.readyEvent) {
            onReady(i);
        } else if (event === 'pusher:connection_established') {
            ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: channels[i] } }));
        } else if (event === 'pusher_internal:subscription_succeeded') {
            connectedCount++;
            settle(i, 2);
        } else if (event === 'pusher:error' || event === 'pusher:subscription_error') {
            const text = String(msg.data?.message ?? msg.data?.error ?? event);
            errors[text] = (errors[text] || 0) + 1;
            settle(i, 3);
        } else if (event === 'pusher:ping') {
            ws.send('{"event":"pusher:pong","data":{}}');
        }
    });
    ws.on('error', (err) => {
        const text = String(err?.message ?? err);
        errors[text] = (errors[text] || 0) + 1;
        settle(i, 3);
    });
    ws.on('close', () => {
        sockets[i].connected = false;
        disconnects++;
        disconnectReasons.closed = (disconnectReasons.closed || 0) + 1;
        settle(i, 3);
    });
}

function openClient(i) {
    if (RAW) {
        openRawPusherClient(i);
        return;
    }
    if (PUSHER) {
        openPusherClient(i);
        return;
    }
    const wantUpgrade = opts.transport === 'polling-upgrade';
    const socket = io(opts.url, {
        transports: TRANSPORTS[opts.transport],
        forceNew: true,
        reconnection: false,
        timeout: 60_000,
        ...AGENT,
    });
    sockets[i] = socket;
    const manager = socket.io;
    const watchUpgrade = () => {
        const engine = manager.engine;
        if (!engine) return;
        const upgraded = () => {
            upgradedCount++;
            if (state[i] === 1) settle(i, 2);
        };
        if (engine.transport && engine.transport.name === 'websocket') upgraded();
        else engine.once('upgrade', upgraded);
    };
    if (wantUpgrade) manager.once('open', watchUpgrade);
    socket.on('connect', () => {
        connectedCount++;
        socket.emit('subscribe', { channel: channels[i], auth: { headers: {} } });
        if (!wantUpgrade) settle(i, 2);
        else if (state[i] === 0) {
            state[i] = 1;
            const engine = manager.engine;
            if (engine && engine.transport && engine.transport.name === 'websocket') settle(i, 2);
        }
    });
    socket.on('connect_error', (err) => {
        const msg = String(err && err.message ? err.message : err);
        errors[msg] = (errors[msg] || 0) + 1;
        settle(i, 3);
    });
    socket.on('disconnect', (reason) => {
        disconnects++;
        disconnectReasons[reason] = (disconnectReasons[reason] || 0) + 1;
        settle(i, 3);
    });
    socket.on(opts.event, (_channel, data) => onEvent(i, data));
    socket.on(opts.readyEvent, () => onReady(i));
}

async function connectAll(rate, timeoutMs) {
    const started = process.hrtime.bigint();
    const done = new Promise((resolve) => {
        connectWaiter = resolve;
        if (doneCount === n) resolve();
    });
    if (!rate || rate <= 0) {
        for (let i = 0; i < n; i++) openClient(i);
    } else {
        // Paced: a batch every 10 ms.
        const perTick = Math.max(1, Math.round(rate / 100));
        let next = 0;
        await new Promise((resolve) => {
            const tick = () => {
                const end = Math.min(n, next + perTick);
                for (; next < end; next++) openClient(next);
                if (next >= n) resolve();
                else setTimeout(tick, 10);
            };
            tick();
        });
    }
    let timer;
    const timedOut = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs); });
    await Promise.race([done, timedOut]);
    clearTimeout(timer);
    const pending = n - doneCount;
    if (pending > 0) errors.timeout = (errors.timeout || 0) + pending;
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    out({
        type: 'connected', ok: doneCount - failedCount, failed: failedCount + pending,
        upgraded: upgradedCount, errors, ms,
    });
}

// -- churn (bench/run.py's soak) ---------------------------------------------------------------
const churn = {
    timer: null, subscribes: 0, connections: 0, drops: 0, transientFailed: 0, next: 0, seq: 0,
};
const extra = new Array(n).fill(null);

// A network drop: the TCP connection destroyed, no close frame and no goodbye (`41`). (A
// websocket close frame is a goodbye to echo-server: nothing to recover.)
function dropConnection(socket) {
    const transport = socket.io.engine && socket.io.engine.transport;
    const ws = transport && transport.ws;
    if (ws && typeof ws.terminate === 'function') ws.terminate();
    else socket.io.engine.close();
}

function transient(drop) {
    const socket = io(opts.url, {
        transports: TRANSPORTS[opts.transport], forceNew: true, reconnection: false,
        ...AGENT,
    });
    socket.on('connect', () => {
        socket.emit('subscribe', { channel: `transient.${churn.seq++}`, auth: { headers: {} } });
        setTimeout(() => (drop ? dropConnection(socket) : socket.close()), 1000);
    });
    socket.on('connect_error', () => { churn.transientFailed++; socket.close(); });
}

function churnTick(subscribesPerTick, connectionsPerTick, dropsPerTick) {
    for (let k = 0; k < subscribesPerTick && n > 0; k++) {
        const i = churn.next;
        churn.next = (i + 1) % n;
        const socket = sockets[i];
        if (!socket || !socket.connected) continue;
        if (extra[i]) socket.emit('unsubscribe', { channel: extra[i], auth: { headers: {} } });
        extra[i] = `churn.${opts.offset + i}.${churn.seq++}`;
        socket.emit('subscribe', { channel: extra[i], auth: { headers: {} } });
        churn.subscribes++;
    }
    for (let k = 0; k < connectionsPerTick; k++) {
        churn.connections++;
        transient(false);
    }
    for (let k = 0; k < dropsPerTick; k++) {
        churn.drops++;
        transient(true);
    }
}

function setChurn(subscribesPerSecond, connectionsPerSecond, dropsPerSecond) {
    if (churn.timer) clearInterval(churn.timer);
    churn.timer = null;
    if (subscribesPerSecond > 0 || connectionsPerSecond > 0 || dropsPerSecond > 0) {
        // Ten ticks a second; fractional rates accumulate so that low rates still happen.
        const owed = [0, 0, 0];
        const rates = [subscribesPerSecond, connectionsPerSecond, dropsPerSecond];
        churn.timer = setInterval(() => {
            const now = rates.map((rate, k) => {
                owed[k] += rate / 10;
                const whole = Math.floor(owed[k]);
                owed[k] -= whole;
                return whole;
            });
            churnTick(...now);
        }, 100);
    }
    return {
        type: 'churn', subscribes: churn.subscribes, connections: churn.connections,
        drops: churn.drops, transient_failed: churn.transientFailed,
    };
}

function stats() {
    return {
        type: 'stats', clients: n, received, ready: readyCount, connected: connectedCount,
        upgraded: upgradedCount, disconnects, disconnect_reasons: disconnectReasons,
    };
}

function reset() {
    counts.fill(0);
    received = 0;
    hist = new Uint32Array(BUCKETS);
    overflow = [];
    latN = 0;
    latSumNs = 0;
    latMinNs = Infinity;
    latMaxNs = 0;
    negative = 0;
}

function report(expected, expectedAll) {
    let lost = 0;
    let extra = 0;
    let clientsShort = 0;
    let clientsExtra = 0;
    let expectedTotal = 0;
    const worst = [];
    for (let i = 0; i < n; i++) {
        const want = expected ? (expected[channels[i]] || 0) : (expectedAll || 0);
        expectedTotal += want;
        const diff = want - counts[i];
        if (diff > 0) {
            lost += diff;
            clientsShort++;
            if (worst.length < 5) worst.push({ client: opts.offset + i, want, got: counts[i] });
        } else if (diff < 0) {
            extra -= diff;
            clientsExtra++;
        }
    }
    const sparse = {};
    for (let b = 0; b < BUCKETS; b++) if (hist[b]) sparse[b] = hist[b];
    return {
        type: 'report', clients: n, expected: expectedTotal, received, lost, extra,
        clients_short: clientsShort, clients_extra: clientsExtra, worst,
        latency: {
            bucket_ns: BUCKET_NS, buckets: sparse, overflow, n: latN, sum_ns: latSumNs,
            min_ns: latN ? latMinNs : null, max_ns: latN ? latMaxNs : null, negative,
        },
        disconnects, disconnect_reasons: disconnectReasons, errors,
    };
}

function shutdown(code = 0) {
    setChurn(0, 0);
    for (const socket of sockets) {
        if (socket) {
            try {
                socket.close();
            } catch {
                // closing is best effort
            }
        }
    }
    setTimeout(() => process.exit(code), 200);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGUSR2', () => out(stats()));

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
    if (!line.trim()) return;
    let msg;
    try {
        msg = JSON.parse(line);
    } catch {
        out({ type: 'error', message: `bad command: ${line.slice(0, 80)}` });
        return;
    }
    switch (msg.cmd) {
        case 'connect':
            connectAll(msg.rate || 0, msg.timeout_ms || 60_000).catch((err) => {
                out({ type: 'error', message: String(err) });
            });
            break;
        case 'stats': out(stats()); break;
        case 'reset': reset(); out({ type: 'ok' }); break;
        case 'report': out(report(msg.expected, msg.expected_all)); break;
        case 'churn':
            if (PUSHER) out({ type: 'error', message: 'churn drives socket.io clients only' });
            else out(setChurn(msg.subscribes || 0, msg.connections || 0, msg.drops || 0));
            break;
        case 'exit': shutdown(0); break;
        default: out({ type: 'error', message: `unknown command ${msg.cmd}` });
    }
});
rl.on('close', () => shutdown(0));
out({ type: 'hello', pid: process.pid, version: opts.version, clients: n,
      hrtime_ns: Number(process.hrtime.bigint()) });
