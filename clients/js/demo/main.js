// The lead-management demo page. URL parameters:
//   admin=<id>        who is logged in (the demo has no passwords)
//   api=<url>         the demo backend (default: this host, port 8080)
//   echo=<url>        echo-server (default: the server that served this page)
//   stack=echo2-sio4|echo1-sio2|echo2-reverb   which client stack to use: laravel-echo 2 or 1
//                     over socket.io-client 4 or 2, or laravel-echo 2's `reverb` over pusher-js
//   key=<app key>     the Pusher app's public key (echo2-reverb only)
//   retryBase, retryMax (ms)      the reconnection backoff (tests use short ones)
import { createApp, reactive } from 'vue';
import { createEcho } from '../src/echo.js';
import { DEFAULT_STACK, STACKS } from '../src/stacks.js';
import { createRealtime } from '../src/useRealtime.js';
import { WebSocketService } from '../src/WebSocketService.js';
import { DemoApi } from './api.js';
import App from './App.vue';

const params = new URLSearchParams(location.search);
const adminId = params.get('admin') || '1';
const apiBase = params.get('api') || `${location.protocol}//${location.hostname}:8080`;
const echoHost = params.get('echo') || location.origin;
const stackName = params.get('stack') || DEFAULT_STACK;
const appKey = params.get('key');
const number = (name, fallback) => {
    const value = Number(params.get(name));
    return Number.isFinite(value) && value > 0 ? value : fallback;
};

async function main() {
    const stack = STACKS[stackName];
    if (!stack) throw new Error(`unknown stack ${stackName}: use ${Object.keys(STACKS).join(', ')}`);
    const api = new DemoApi(apiBase);
    const session = await api.login(adminId);
    const data = await api.leads();

    const store = reactive({
        me: session.admin, leads: data.leads, admins: data.admins, online: [],
        onlineAdminIds: data.online_admin_ids, toasts: [],
        stack: stackName, tokenRefreshes: 0,
    });
    const service = new WebSocketService({
        echo: {
            ...stack,
            host: echoHost,
            token: session.token,
            refreshToken: () => api.refreshToken(),
            onTokenRefreshed: () => { store.tokenRefreshes += 1; },
            key: appKey,
            // socket.io: echo-server asks the backend; pusher-js asks it itself, and signs in.
            echoOptions: stack.Pusher ? {
                authEndpoint: `${api.base}/broadcasting/auth`,
                userAuthentication: { endpoint: `${api.base}/broadcasting/user-auth` },
            } : { transports: ['websocket', 'polling'] },
        },
        backoff: { base: number('retryBase', 1000), max: number('retryMax', 30000) },
        createEcho,
    });
    const app = createApp(App, { api, store });
    app.use(createRealtime(service));
    app.mount('#app');
    // For the end-to-end test and for poking around in the console.
    window.demo = {
        service, store,
        refreshToken: () => service.connection.refresh(),
    };
    document.body.dataset.ready = '1';
}

main().catch((error) => {
    const box = document.getElementById('app');
    box.textContent = `Demo başlatılamadı: ${error.message}`;
    box.className = 'fatal';
    document.body.dataset.ready = 'error';
    console.error(error);
});
