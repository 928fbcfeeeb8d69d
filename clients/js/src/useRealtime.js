// Vue 3 glue: one WebSocketService per app (provided by the `createRealtime` plugin), and
// `useRealtime()` for components.
//
// The seed's composable connected and disconnected the *shared* service from every component
// (unmounting the indicator cut the whole page off) and removed its window listeners by
// splitting names on '-' (so 'lead-42' became 'lead-42' → 'lead-42'.split → wrong event, and
// 'admin-updates' was never removed). Here every listener a component registers is removed
// when that component (its effect scope) goes away, by the exact `off()` the service gave
// for it; the connection itself belongs to the app and lives as long as the app.

import { computed, getCurrentScope, inject, onScopeDispose, shallowRef } from 'vue';
import { STATUS, WebSocketService } from './WebSocketService.js';

export const REALTIME_KEY = Symbol('echo-server realtime');

export const LEADS_CHANNEL = 'leads-management';
export const LEAD_ASSIGNED = '.lead.assigned';
export const CAPACITY_UPDATED = '.admin.capacity.updated';

/**
 * `app.use(createRealtime({echo: {...}, backoff: {...}}))`, or pass a WebSocketService.
 * The service starts on first use and stops when the app is unmounted.
 */
export function createRealtime(serviceOrOptions = {}) {
    const service = serviceOrOptions instanceof WebSocketService
        ? serviceOrOptions : new WebSocketService(serviceOrOptions);
    return {
        service,
        install(app) {
            app.provide(REALTIME_KEY, service);
            app.config.globalProperties.$realtime = service;
            if (typeof app.onUnmount === 'function') app.onUnmount(() => service.stop());
        },
    };
}

/** The seed's three-state view of the status (for code written against it). */
export function connectionStatusOf(status) {
    if (status === STATUS.CONNECTED) return 'connected';
    if (status === STATUS.IDLE || status === STATUS.CONNECTING) return 'connecting';
    return 'disconnected';
}

export function useRealtime(explicitService) {
    const service = explicitService || inject(REALTIME_KEY, null);
    if (!service) {
        throw new Error('useRealtime(): install the plugin first: app.use(createRealtime(options))');
    }
    service.start();

    const state = shallowRef(service.state);
    const stopWatching = service.subscribe((next) => { state.value = next; });
    const offs = new Set();

    // Every registration made through this composable is undone with it.
    function track(off) {
        offs.add(off);
        return () => {
            if (offs.delete(off)) off();
        };
    }

    const listen = (channel, event, callback) =>
        track(service.listen('public', channel, event, callback));
    const listenPrivate = (channel, event, callback) =>
        track(service.listen('private', channel, event, callback));
    const listenPresence = (channel, event, callback) =>
        track(service.listen('presence', channel, event, callback));
    const join = (channel, handlers) => track(service.join(channel, handlers));
    const listenForWhisper = (kind, channel, event, callback) =>
        track(service.listenForWhisper(kind, channel, event, callback));
    const whisper = (kind, channel, event, data) => service.whisper(kind, channel, event, data);

    /** `lead.assigned` for one lead (ids compared as strings: route params are strings). */
    const subscribeToLead = (leadId, callback) =>
        listen(LEADS_CHANNEL, LEAD_ASSIGNED, (data) => {
            const id = data && data.lead ? data.lead.id : undefined;
            if (id !== undefined && String(id) === String(leadId)) callback(data);
        });
    const subscribeToAdminUpdates = (callback) =>
        listen(LEADS_CHANNEL, CAPACITY_UPDATED, callback);

    /** Remove everything this composable registered (also done when its scope ends). */
    function dispose() {
        stopWatching();
        for (const off of [...offs]) {
            offs.delete(off);
            off();
        }
    }
    if (getCurrentScope()) onScopeDispose(dispose);

    const status = computed(() => state.value.status);
    return {
        service,
        state,
        status,
        connectionStatus: computed(() => connectionStatusOf(status.value)),
        isConnected: computed(() => status.value === STATUS.CONNECTED),
        retryIn: computed(() => state.value.retryIn),
        retrying: computed(() => state.value.retrying),
        attempt: computed(() => state.value.attempt),
        lastError: computed(() => state.value.lastError),
        socketId: computed(() => state.value.socketId),
        // The last reconnect came back as the same session, with what it missed.
        recovered: computed(() => state.value.recovered === true),
        // When the page last received an event (any listener), for "Son güncelleme".
        lastUpdate: computed(() => (state.value.lastEventAt ? new Date(state.value.lastEventAt) : null)),
        reconnect: () => service.reconnectNow(),
        connect: () => service.reconnectNow(),
        listen,
        listenPrivate,
        listenPresence,
        listenForWhisper,
        whisper,
        join,
        subscribeToLead,
        subscribeToAdminUpdates,
        dispose,
    };
}
