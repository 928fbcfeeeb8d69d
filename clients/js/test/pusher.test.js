// The Pusher stack (laravel-echo 2's `reverb` broadcaster over pusher-js) in the kit: the
// options createEcho gives pusher-js, and WebSocketService's status and reconnection over it,
// against real laravel-echo 2 driving a fake pusher-js.
import Echo2 from 'laravel-echo-2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createEcho } from '../src/echo.js';
import { STATUS, WebSocketService } from '../src/WebSocketService.js';
import { FakePusher, jwt } from './fakeStack.js';

const HOST = 'http://127.0.0.1:6001';
const KEY = 'app-key';
const AUTH = 'http://127.0.0.1:8080/broadcasting/auth';
const USER_AUTH = 'http://127.0.0.1:8080/broadcasting/user-auth';
const nowSeconds = () => Math.floor(Date.now() / 1000);

beforeEach(() => vi.useFakeTimers({ now: new Date('2026-11-25T10:00:00Z') }));
afterEach(() => vi.useRealTimers());

describe('createEcho (Pusher stack)', () => {
    it("points pusher-js at echo-server's /app/{key}; the token is the Bearer of the app's auth", async () => {
        const token = jwt(nowSeconds() + 120);
        const fresh = jwt(nowSeconds() + 600);
        const conn = createEcho({ Echo: Echo2, Pusher: FakePusher, host: HOST, key: KEY, token,
                                  refreshToken: async () => fresh,
                                  echoOptions: { authEndpoint: AUTH } });
        const pusher = conn.echo.connector.pusher;
        expect(pusher.key).toBe(KEY);
        expect(pusher.options).toMatchObject({
            broadcaster: 'reverb', cluster: '', wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false,
            authEndpoint: AUTH, auth: { headers: { Authorization: `Bearer ${token}` } },
        });
        expect(pusher.options.auth.token).toBeUndefined();  // no handshake token in this protocol
        await conn.refresh();
        // pusher-js reads this same headers object at each /broadcasting/auth request.
        expect(pusher.options.auth.headers.Authorization).toBe(`Bearer ${fresh}`);
        conn.dispose();
        expect(pusher.connection.state).toBe('disconnected');
    });

    it('signs in at every connection, at the app\'s user-auth route with the current Bearer', async () => {
        const token = jwt(nowSeconds() + 120);
        const fresh = jwt(nowSeconds() + 600);
        const conn = createEcho({ Echo: Echo2, Pusher: FakePusher, host: HOST, key: KEY, token,
                                  refreshToken: async () => fresh,
                                  echoOptions: { authEndpoint: AUTH,
                                                 userAuthentication: { endpoint: USER_AUTH } } });
        const pusher = conn.echo.connector.pusher;
        expect(pusher.signins).toEqual([]);  // not before there is a socket id to sign
        pusher.accept('111.222');
        expect(pusher.signins).toEqual([
            { socketId: '111.222', endpoint: USER_AUTH, headers: { Authorization: `Bearer ${token}` } }]);

        await conn.refresh();
        pusher.drop(1006);
        await vi.advanceTimersByTimeAsync(0);  // pusherSocket stops pusher-js's own retry
        conn.socket.connect();
        pusher.accept('333.444');
        expect(pusher.signins.slice(1)).toEqual([
            { socketId: '333.444', endpoint: USER_AUTH, headers: { Authorization: `Bearer ${fresh}` } }]);
        conn.dispose();
    });

    it('takes TLS and the port from an https URL, and needs the key', () => {
        const conn = createEcho({ Echo: Echo2, Pusher: FakePusher, host: 'https://ws.example.com', key: KEY });
        expect(conn.echo.connector.pusher.options).toMatchObject({
            wsHost: 'ws.example.com', wssPort: 443, forceTLS: true,
            // Laravel's route, on the page's own origin, when the app names none.
            userAuthentication: { endpoint: '/broadcasting/user-auth' } });
        conn.dispose();
        expect(() => createEcho({ Echo: Echo2, Pusher: FakePusher, host: HOST }))
            .toThrow(/needs the app `key`/);
    });
});

function setup() {
    const service = new WebSocketService({
        echo: { Echo: Echo2, Pusher: FakePusher, host: HOST, key: KEY, echoOptions: { authEndpoint: AUTH } },
        backoff: { base: 1000, max: 30000, jitter: 0.5 }, random: () => 0, window: null, logger: null,
    });
    service.start();
    return { service, pusher: service.echo.connector.pusher };
}

describe('WebSocketService (echo2-reverb)', () => {
    it('is connecting until pusher-js connects, then shows its socket id', () => {
        const { service, pusher } = setup();
        expect(service.state.status).toBe(STATUS.CONNECTING);
        pusher.accept('111.222');
        expect(service.state).toMatchObject({ status: STATUS.CONNECTED, socketId: '111.222', recovered: false });
    });

    it("a lost connection: pusher-js's own retry is stopped, the service's backoff reconnects", async () => {
        const { service, pusher } = setup();
        const off = service.listen('private', 'admin-dashboard.2', '.lead.assigned', () => {});
        service.join('leads-management', {});
        pusher.accept();
        expect(pusher.subscribes()).toEqual(['private-admin-dashboard.2', 'presence-leads-management']);

        pusher.drop(1006);
        await vi.advanceTimersByTimeAsync(0);
        expect(pusher.ownRetry).toBe(false);
        expect(pusher.connection.state).toBe('disconnected');
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 1, retryIn: 1,
                                              socketId: null, lastError: 'closed with code 1006' });

        await vi.advanceTimersByTimeAsync(1000);
        expect(pusher.connectCalls).toBe(2);
        pusher.accept('333.444');
        expect(service.state).toMatchObject({ status: STATUS.CONNECTED, socketId: '333.444', reconnects: 1 });
        // Resubscribed once each (pusher-js did; the service's own subscribe found them pending).
        expect(pusher.subscribes()).toEqual(['private-admin-dashboard.2', 'presence-leads-management',
                                             'private-admin-dashboard.2', 'presence-leads-management']);
        off();
        expect(pusher.sent.at(-1)).toEqual({ event: 'pusher:unsubscribe', channel: 'private-admin-dashboard.2' });
    });

    it('an attempt pusher-js gives up on is a failed attempt: its loop stops, the next one is planned', async () => {
        const { service, pusher } = setup();
        pusher.unavailable();
        await vi.advanceTimersByTimeAsync(0);
        expect(pusher.attempting).toBe(false);
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 1,
                                              lastError: 'connection unavailable' });
        await vi.advanceTimersByTimeAsync(1000);
        expect(pusher.connectCalls).toBe(2);
        pusher.unavailable();
        await vi.advanceTimersByTimeAsync(0);
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 2, retryIn: 2 });
    });

    it('says why the server refused the connection', () => {
        const { service, pusher } = setup();
        pusher.refuse(4001, 'App key does not exist');
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 1,
                                              lastError: 'App key does not exist (4001)' });
    });

    it("a server's 4200 (reconnect now): pusher-js's immediate retry becomes the service's", async () => {
        const { service, pusher } = setup();
        pusher.accept();
        pusher.connection.fire('error', { type: 'PusherError', data: { code: 4200, message: 'Server shutting down' } });
        pusher.retryAtOnce();
        await vi.advanceTimersByTimeAsync(0);
        expect(pusher.attempting).toBe(false);
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, attempt: 1,
                                              lastError: 'Server shutting down (4200)' });
        await vi.advanceTimersByTimeAsync(1000);
        pusher.accept();
        expect(service.state).toMatchObject({ status: STATUS.CONNECTED, reconnects: 1 });
    });

    it("stop() closes pusher-js's connection; a page's own disconnect is respected", () => {
        const { service, pusher } = setup();
        pusher.accept();
        service.echo.disconnect();
        expect(service.state).toMatchObject({ status: STATUS.DISCONNECTED, retryIn: null,
                                              lastError: null });
        service.stop();
        expect(service.state.status).toBe(STATUS.STOPPED);
        expect(pusher.connection.state).toBe('disconnected');
    });
});
