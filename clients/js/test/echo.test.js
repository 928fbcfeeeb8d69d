import Echo1 from 'laravel-echo-1';
import Echo2 from 'laravel-echo-2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createEcho, socketIoProtocol, tokenExpiry } from '../src/echo.js';
import { fakeIo, jwt } from './fakeStack.js';

const HOST = 'http://127.0.0.1:6001';
const nowSeconds = () => Math.floor(Date.now() / 1000);

describe('tokenExpiry', () => {
    it('reads exp from a JWT, null otherwise', () => {
        expect(tokenExpiry(jwt(2000000000))).toBe(2000000000 * 1000);
        expect(tokenExpiry(jwt(2000000000, { name: 'Ayşe Yılmaz' }))).toBe(2000000000 * 1000);
        expect(tokenExpiry('opaque-token')).toBeNull();
        expect(tokenExpiry('a.b.c')).toBeNull();
        expect(tokenExpiry(null)).toBeNull();
    });
});

describe('socketIoProtocol', () => {
    it('tells socket.io-client 2 from 3/4', async () => {
        expect(socketIoProtocol((await import('socket.io-client-2')).default)).toBe(4);
        expect(socketIoProtocol((await import('socket.io-client-4')).io)).toBe(5);
        expect(() => socketIoProtocol({})).toThrow(/socket.io-client/);
    });
});

describe('createEcho', () => {
    beforeEach(() => vi.useFakeTimers({ now: new Date('2026-11-25T10:00:00Z') }));
    afterEach(() => vi.useRealTimers());

    it('laravel-echo 2 + socket.io 4: token in the connect payload and as Bearer', () => {
        const io = fakeIo(5);
        const token = jwt(nowSeconds() + 3600);
        const conn = createEcho({ Echo: Echo2, io, host: HOST, token,
                                  authHeaders: { 'X-CSRF-TOKEN': 'csrf' } });
        const socket = io.sockets[0];
        expect(conn.protocol).toBe(5);
        expect(conn.socket).toBe(socket);
        expect(socket.host).toBe(HOST);
        expect(socket.opts.forceNew).toBe(true);
        expect(socket.opts.auth.token).toBe(token);
        expect(socket.opts.auth.headers).toEqual({ 'X-CSRF-TOKEN': 'csrf', Authorization: `Bearer ${token}` });
        expect(socket.opts.query).toBeUndefined();  // never in the URL when a payload exists
        conn.echo.private('admin-dashboard.5');
        socket.accept();
        expect(socket.sent[0].args[0]).toEqual({
            channel: 'private-admin-dashboard.5',
            auth: { token, headers: { 'X-CSRF-TOKEN': 'csrf', Authorization: `Bearer ${token}` } },
        });
        conn.dispose();
    });

    it('socket.io 2: the recovery extension carries the pid and the last offset back', () => {
        const io = fakeIo(4);
        const conn = createEcho({ Echo: Echo1, io, host: HOST });
        const socket = io.sockets[0];
        const query = socket.io.opts.query;
        const seen = [];
        socket.on('lead.assigned', (channel, data) => seen.push([channel, data]));
        socket.accept('111.222');
        socket.fire('echo:recovery', { pid: 'p1', recovered: false });
        expect(query.echoRecovery).toBe('p1');
        socket.onevent({ data: ['lead.assigned', 'leads-management', { n: 1 }, '17'] });
        expect(query.echoOffset).toBe('17');
        expect(seen).toEqual([['leads-management', { n: 1 }]]);  // the offset is not data
        socket.fire('echo:recovery', { pid: 'p1', recovered: true });
        expect(socket.recovered).toBe(true);
        socket.fire('echo:recovery', { pid: 'p2', recovered: false });  // a new session
        expect([query.echoRecovery, query.echoOffset]).toEqual(['p2', undefined]);
        conn.dispose();
    });

    it('laravel-echo 1 + socket.io 2: token in the query string', () => {
        const io = fakeIo(4);
        const token = jwt(nowSeconds() + 3600);
        const conn = createEcho({ Echo: Echo1, io, host: HOST, token, bearer: false,
                                  echoOptions: { query: { lang: 'tr' } } });
        const socket = io.sockets[0];
        expect(conn.protocol).toBe(4);
        // echoRecovery: echo-server's recovery extension, opted into on socket.io-client 2.
        expect(socket.opts.query).toEqual({ lang: 'tr', token, echoRecovery: '1' });
        expect(socket.opts.auth.token).toBeUndefined();
        expect(socket.opts.auth.headers.Authorization).toBeUndefined();
        conn.dispose();
    });

    for (const [stack, Echo, protocol] of [['echo2-sio4', Echo2, 5], ['echo1-sio2', Echo1, 4]]) {
        it(`${stack}: refreshes before exp; the next connect and subscribe carry the new token`, async () => {
            const io = fakeIo(protocol);
            const first = jwt(nowSeconds() + 120);
            const issued = [];
            const refreshToken = vi.fn(async () => {
                issued.push(jwt(nowSeconds() + 120, { n: issued.length }));
                return issued.at(-1);
            });
            const refreshed = vi.fn();
            const conn = createEcho({ Echo, io, host: HOST, token: first, refreshToken,
                                      refreshBefore: 30000, onTokenRefreshed: refreshed });
            const socket = io.sockets[0];
            expect(socket.handshakes).toEqual([first]);

            await vi.advanceTimersByTimeAsync(89_000);
            expect(refreshToken).not.toHaveBeenCalled();
            await vi.advanceTimersByTimeAsync(1_000);  // 30 s before exp
            expect(refreshToken).toHaveBeenCalledTimes(1);
            expect(refreshToken).toHaveBeenCalledWith(first);
            const second = issued[0];
            expect(refreshed).toHaveBeenCalledWith(second);
            expect(conn.token).toBe(second);

            socket.connect();  // what a reconnect does
            expect(socket.handshakes).toEqual([first, second]);
            socket.accept();
            conn.echo.private('admin-dashboard.5');
            expect(socket.sent.at(-1).args[0].auth.headers.Authorization).toBe(`Bearer ${second}`);

            // and the next one is planned from the new token's exp (t = 90 s + 90 s)
            await vi.advanceTimersByTimeAsync(89_000);
            expect(refreshToken).toHaveBeenCalledTimes(1);
            await vi.advanceTimersByTimeAsync(1_000);
            expect(refreshToken).toHaveBeenCalledTimes(2);
            expect(conn.token).toBe(issued[1]);
            conn.dispose();
        });
    }

    it('a short-lived token is renewed half-way through its life', async () => {
        const io = fakeIo();
        const refreshToken = vi.fn(async () => jwt(nowSeconds() + 10));
        const conn = createEcho({ Echo: Echo2, io, host: HOST, token: jwt(nowSeconds() + 10),
                                  refreshToken, refreshBefore: 30000 });
        await vi.advanceTimersByTimeAsync(4_900);
        expect(refreshToken).not.toHaveBeenCalled();
        await vi.advanceTimersByTimeAsync(100);
        expect(refreshToken).toHaveBeenCalledTimes(1);
        conn.dispose();
        await vi.advanceTimersByTimeAsync(60_000);
        expect(refreshToken).toHaveBeenCalledTimes(1);  // dispose stopped the timer
    });

    it('a callback handing out expired tokens does not spin', async () => {
        const io = fakeIo();
        const refreshToken = vi.fn(async () => jwt(nowSeconds() - 1));
        const onTokenError = vi.fn();
        const conn = createEcho({ Echo: Echo2, io, host: HOST, token: jwt(nowSeconds() + 60),
                                  refreshToken, refreshRetry: 5000, onTokenError });
        await vi.advanceTimersByTimeAsync(60_000);
        expect(refreshToken.mock.calls.length).toBeLessThanOrEqual(7);  // at 30 s, then every 5 s
        expect(onTokenError.mock.calls[0][0].message).toMatch(/expired/);
        conn.dispose();
    });

    it('a failed refresh is reported and tried again', async () => {
        const io = fakeIo();
        const good = jwt(nowSeconds() + 3600);
        const refreshToken = vi.fn()
            .mockRejectedValueOnce(new Error('502'))
            .mockResolvedValueOnce(good);
        const onTokenError = vi.fn();
        const conn = createEcho({ Echo: Echo2, io, host: HOST, token: jwt(nowSeconds() + 60),
                                  refreshToken, refreshRetry: 5000, onTokenError });
        await vi.advanceTimersByTimeAsync(30_000);
        expect(onTokenError).toHaveBeenCalledTimes(1);
        expect(conn.token).not.toBe(good);
        await vi.advanceTimersByTimeAsync(5_000);
        expect(refreshToken).toHaveBeenCalledTimes(2);
        expect(conn.token).toBe(good);
        conn.dispose();
    });

    it('before a reconnect: renews an expired token, or one the server refused', async () => {
        const io = fakeIo();
        let n = 0;
        const refreshToken = vi.fn(async () => `opaque-${++n}`);
        const conn = createEcho({ Echo: Echo2, io, host: HOST, token: 'opaque-0', refreshToken });
        await conn.beforeConnect();
        expect(refreshToken).not.toHaveBeenCalled();  // opaque and not refused: keep it
        io.sockets[0].refuse('token expired');
        await conn.beforeConnect();
        expect(conn.token).toBe('opaque-1');
        io.sockets[0].refuse('xhr poll error');  // a network error says nothing of the token
        await conn.beforeConnect();
        expect(conn.token).toBe('opaque-1');
        conn.dispose();

        const io2 = fakeIo();
        const expired = createEcho({ Echo: Echo2, io: io2, host: HOST,
                                     token: jwt(nowSeconds() - 5), refreshToken });
        await expired.beforeConnect();
        expect(expired.token).toBe('opaque-2');
        expect(io2.sockets[0].opts.auth.token).toBe('opaque-2');
        expired.dispose();
    });
});
