#!/usr/bin/env node
// Many pages in one process: N laravel-echo 2 + socket.io-client 4 clients (websocket only,
// quick reconnects) listening on one public channel, for tests where fifty Node processes
// would cost more than the server under test. Each page keeps what it received (the `n` of
// each event's data), how often it connected and how often that was a recovery, and a log of
// its disconnects (reason) and connects (recovered, events so far, last offset).
//
// usage: node many_pages.mjs URL COUNT CHANNEL EVENT
// stdout: {"type":"ready"} once every page is connected; then one {"type":"report",...} per
// "report" line on stdin. "quit" disconnects them all and exits.

import { createInterface } from 'node:readline';

const [url, count, channel, event] = process.argv.slice(2);
const echoMod = await import('laravel-echo-2');
const Echo = echoMod.default?.default ?? echoMod.default;
const ioMod = await import('socket.io-client-4');
const io = typeof ioMod.io === 'function' ? ioMod.io : ioMod.default;

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const pages = [];
let connected = 0;
for (let i = 0; i < Number(count); i++) {
    const echo = new Echo({
        broadcaster: 'socket.io', host: url, client: io, withoutInterceptors: true,
        transports: ['websocket'], reconnectionDelay: 50, reconnectionDelayMax: 250,
        auth: { headers: {} },
    });
    const page = { received: [], connects: 0, recovered: 0, ids: [], log: [] };
    const socket = echo.connector.socket;
    socket.on('disconnect', (reason) => page.log.push(`d:${reason}@${page.received.length}`));
    socket.on('connect', () => {
        page.log.push(`c:${socket.recovered}@${page.received.length}:${socket._lastOffset ?? ''}`);
        page.connects++;
        if (socket.recovered) page.recovered++;
        if (!page.ids.includes(socket.id)) page.ids.push(socket.id);
        if (page.connects === 1 && ++connected === pages.length) out({ type: 'ready' });
    });
    echo.channel(channel).listen(`.${event}`, (data) => page.received.push(data.n));
    pages.push({ echo, page });
}

for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === 'report') {
        out({ type: 'report', pages: pages.map((p) => p.page) });
    } else if (line.trim() === 'quit') {
        break;
    }
}
for (const { echo } of pages) echo.disconnect();
process.exit(0);
