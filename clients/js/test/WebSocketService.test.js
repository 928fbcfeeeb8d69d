// The service's state machine against real laravel-echo (1.x and 2.x) over a fake socket.
import Echo1 from 'laravel-echo-1';
import Echo2 from 'laravel-echo-2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createEcho } from '../src/echo.js';
import { STATUS, WebSocketService } from '../src/WebSocketService.js';
import { fakeIo, jwt } from './fakeStack.js';

const HOST = 'http://127.0.0.1:6001';

function setup({ Echo = Echo2, protocol = 5, backoff = { base: 1000, max: 30000, jitter: 0.5 },
                 random = () => 0, echo = {}, win = null } = {}) {
    const io = fakeIo(protocol);
    const factory = vi.fn(createEcho);
    const service = new WebSocketService({
        echo: { Echo, io, host: HOST, ...echo }, backoff, random, createEcho: factory,
        window: win, logger: null,
    });
    const states = [];
    service.subscribe((s) => states.push(s));
    service.start();
    return { service, io, factory, states, socket: () => io.sockets[0] };
}

for (const [stack, Echo, protocol] of [['echo2-sio4', Echo2, 5], ['echo1-sio2', Echo1, 4]]) {
    describe(`WebSocketService (${stack})`, () => {
        beforeEach(() => vi.useFakeTimers({ now: new Date('2026-11-25T10:00:00Z') }));
        afterEach(() => vi.useRealTimers());

        it('is connecting until the socket says connect (the seed claimed it at once)', () => {
            const { service, socket, states } = setup({ Echo, protocol });
            expect(service.state.status).toBe(STATUS.CONNECTING);
            expect(service.isConnected).toBe(false);
            socket().accept('abc');
            expect(service.state).toMatchObject({ status: STATUS.CONNECTED, socketId: 'abc', attempt: 0 });
            expect(socket().opts.reconnection).toBe(false);  // the retries are the service's
            socket().drop('transport close');
            // Every state a watcher saw was consistent: never "connected" without a socket id.
            expect(states.map((s) => s.status)).toEqual(
                [STATUS.IDLE, STATUS.CONNECTING, STATUS.CONNECTED, STATUS.DISCONNECTED]);
            expect(states.filter((s) => s.status === STATUS.CONNECTED).every((s) => s.socketId)).toBe(true);
        });

        it('retries forever with exponential backoff and jitter, on one Echo instance', async () => {
            const { service, socket, factory, io } = setup({ Echo, protocol, random: () => 0 });
            socket().accept();
            socket().drop('transport close');
            expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 1, retryIn: 1 });
            expect(service.state.lastError).toBe('transport close');

            const expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000];
            for (const [n, delay] of expected.entries()) {
                expect(service.state.retryAt - Date.now()).toBe(delay);
                await vi.advanceTimersByTimeAsync(delay - 1);
                expect(socket().connectCalls).toBe(n);
                await vi.advanceTimersByTimeAsync(1);
                expect(socket().connectCalls).toBe(n + 1);
                expect(service.state.retrying).toBe(true);
                expect(service.state.status).toBe(STATUS.DISCONNECTED);
                socket().refuse('xhr poll error');
            }
            expect(service.state.attempt).toBe(11);  // past the seed's five, still going
            expect(factory).toHaveBeenCalledTimes(1);
            expect(io.sockets).toHaveLength(1);

            await vi.advanceTimersByTimeAsync(30000);
            socket().accept();
            expect(service.state).toMatchObject({ status: STATUS.CONNECTED, attempt: 0, retryIn: null,
                                                  reconnects: 1 });
        });

        it('counts down the seconds to the next attempt', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0,
                                                backoff: { base: 4000 } });
            socket().refuse('xhr poll error');  // the first connection fails
            expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, retryIn: 4 });
            await vi.advanceTimersByTimeAsync(1000);
            expect(service.state.retryIn).toBe(3);
            await vi.advanceTimersByTimeAsync(2000);
            expect(service.state.retryIn).toBe(1);
            await vi.advanceTimersByTimeAsync(1000);
            expect(service.state).toMatchObject({ retryIn: null, retrying: true });
        });

        it('one failure seen as error and disconnect plans one attempt', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            socket().fire('error', 'Not authorized');
            socket().drop('transport close');
            expect(service.state.attempt).toBe(1);
            await vi.advanceTimersByTimeAsync(1000);
            expect(socket().connectCalls).toBe(1);
            await vi.advanceTimersByTimeAsync(60000);
            expect(socket().connectCalls).toBe(1);
        });

        it('resubscribes each channel once per reconnect, with its real name', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            service.listen('public', 'leads-management', '.lead.assigned', () => {});
            service.listen('private', 'admin-dashboard.5', '.lead.assigned', () => {});
            service.join('leads-management', {});
            socket().accept();
            // Subscribed once each, from socket.io's buffer, with Echo's full names.
            expect(socket().subscribes()).toEqual(
                ['leads-management', 'private-admin-dashboard.5', 'presence-leads-management']);

            socket().drop('ping timeout');
            service.listen('public', 'admin-capacity-updates', '.admin.capacity.updated', () => {});
            await vi.advanceTimersByTimeAsync(1000);
            socket().accept();
            expect(socket().subscribes().slice(3).sort()).toEqual(
                ['admin-capacity-updates', 'leads-management', 'presence-leads-management',
                 'private-admin-dashboard.5']);

            socket().drop('transport close');
            await vi.advanceTimersByTimeAsync(1000);
            socket().accept();
            expect(socket().subscribes().length).toBe(3 + 4 + 4);
        });

        it('says whether a reconnect came back as the same session', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            service.listen('private', 'admin-dashboard.5', '.lead.assigned', () => {});
            socket().accept('sock1');
            expect(service.state.recovered).toBe(false);
            socket().drop('transport close');
            await vi.advanceTimersByTimeAsync(1000);
            socket().accept('sock1', { recovered: true });
            expect(service.state).toMatchObject({ status: STATUS.CONNECTED, recovered: true,
                                                  socketId: 'sock1', reconnects: 1 });
            // Resubscribed all the same: the server answers it without a second auth call,
            // and on socket.io-client 2 it is what brings the channel back.
            expect(socket().subscribes()).toEqual(
                ['private-admin-dashboard.5', 'private-admin-dashboard.5']);
            socket().drop('transport close');
            await vi.advanceTimersByTimeAsync(1000);
            socket().accept('sock2');
            expect(service.state.recovered).toBe(false);
        });

        it('on socket.io-client 2, says recovered when echo-server says so after connect', () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            socket().accept('111.222');
            socket().fire('echo:recovery', { pid: 'p1', recovered: true });
            expect(service.state.recovered).toBe(true);
        });

        it('a server-side disconnect (token expired) is retried too', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            socket().accept();
            socket().drop('io server disconnect');
            expect(service.state.status).toBe(STATUS.DISCONNECTED);
            await vi.advanceTimersByTimeAsync(1000);
            expect(socket().connectCalls).toBe(1);
        });

        it('renews the refused token before the next attempt', async () => {
            const fresh = jwt(Math.floor(Date.now() / 1000) + 3600);
            const refreshToken = vi.fn(async () => fresh);
            const { socket } = setup({ Echo, protocol, random: () => 0,
                                       echo: { token: 'stale', refreshToken } });
            socket().refuse('token expired');
            await vi.advanceTimersByTimeAsync(1000);
            expect(refreshToken).toHaveBeenCalledTimes(1);
            expect(socket().handshakes).toEqual(['stale', fresh]);
        });

        it('listeners come off one by one; the channel is left with the last', () => {
            const { service, socket } = setup({ Echo, protocol });
            socket().accept();
            const got = { a: [], b: [] };
            const offA = service.listen('private', 'admin-dashboard.5', '.lead.assigned', (d) => got.a.push(d));
            const offB = service.listen('private', 'private-admin-dashboard.5', '.lead.assigned', (d) => got.b.push(d));
            expect(service.channelNames()).toEqual(['private-admin-dashboard.5']);
            socket().deliver('lead.assigned', 'private-admin-dashboard.5', { n: 1 });
            offA();
            offA();  // idempotent
            socket().deliver('lead.assigned', 'private-admin-dashboard.5', { n: 2 });
            expect(got).toEqual({ a: [{ n: 1 }], b: [{ n: 1 }, { n: 2 }] });
            expect(socket().unsubscribes()).toEqual([]);
            offB();
            expect(socket().unsubscribes()).toEqual(['private-admin-dashboard.5']);
            expect(socket().count('lead.assigned')).toBe(0);
            expect(Object.keys(service.echo.connector.channels)).toEqual([]);
            expect(service.state.lastEventAt).toBe(Date.now());
        });

        it('keeps the member list of a presence channel across resubscriptions', async () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0 });
            const seen = [];
            const events = [];
            const off = service.join('leads-management', {
                members: (list) => seen.push(list.map((u) => u.id)),
                joining: (u) => events.push(`+${u.id}`),
                leaving: (u) => events.push(`-${u.id}`),
            });
            socket().accept();
            const ch = 'presence-leads-management';
            socket().deliver('presence:subscribed', ch, [{ user_id: 1, user_info: { id: 1 } }]);
            socket().deliver('presence:joining', ch, { user_id: 2, user_info: { id: 2 } });
            socket().deliver('presence:joining', ch, { user_id: 2, user_info: { id: 2 } });
            socket().deliver('presence:leaving', ch, { user_id: 1, user_info: { id: 1 } });
            expect(seen).toEqual([[1], [1, 2], [1, 2], [2]]);
            expect(events).toEqual(['+2', '+2', '-1']);
            expect(service.members('leads-management')).toEqual([{ id: 2 }]);

            socket().drop('transport close');
            expect(seen.at(-1)).toEqual([]);  // offline: nobody is known to be here
            expect(events).toEqual(['+2', '+2', '-1']);  // and nobody "left"
            await vi.advanceTimersByTimeAsync(1000);
            socket().accept();
            socket().deliver('presence:subscribed', ch, [{ user_id: 3, user_info: { id: 3 } },
                                                         { user_id: 2, user_info: { id: 2 } }]);
            expect(seen.at(-1)).toEqual([3, 2]);

            const late = [];
            service.join('presence-leads-management', { here: (list) => late.push(list.length) });
            expect(late).toEqual([2]);  // a late joiner gets the current list at once
            off();
        });

        it('the reconnect button tries at once', () => {
            const { service, socket } = setup({ Echo, protocol, random: () => 0,
                                                backoff: { base: 60000, max: 60000 } });
            socket().accept();
            socket().drop('transport close');
            expect(service.state.retryIn).toBe(60);
            service.reconnectNow();
            expect(service.state).toMatchObject({ status: STATUS.CONNECTING, retryIn: null });
            return Promise.resolve().then(() => expect(socket().connectCalls).toBe(1));
        });

        it('the browser coming back online tries at once', async () => {
            const win = new EventTarget();
            const { service, socket } = setup({ Echo, protocol, backoff: { base: 60000 }, win });
            socket().refuse('xhr poll error');
            win.dispatchEvent(new Event('online'));
            await Promise.resolve();
            expect(socket().connectCalls).toBe(1);
            expect(service.state.status).toBe(STATUS.CONNECTING);
        });

        it('echo.disconnect() by the app is respected: no automatic retry', async () => {
            const { service, socket } = setup({ Echo, protocol });
            socket().accept();
            service.echo.disconnect();
            expect(service.state.status).toBe(STATUS.DISCONNECTED);
            await vi.advanceTimersByTimeAsync(120000);
            expect(socket().connectCalls).toBe(0);
        });

        it('stop() leaves the channels, closes the socket and plans nothing more', async () => {
            const { service, socket } = setup({ Echo, protocol });
            service.listen('public', 'leads-management', '.lead.assigned', () => {});
            service.join('leads-management');
            socket().accept();
            socket().drop('transport close');
            service.stop();
            expect(service.state.status).toBe(STATUS.STOPPED);
            expect(socket().count('connect')).toBe(0);
            await vi.advanceTimersByTimeAsync(120000);
            expect(socket().connectCalls).toBe(0);
            expect(vi.getTimerCount()).toBe(0);
            service.start();
            expect(service.state.status).toBe(STATUS.STOPPED);
        });
    });
}
