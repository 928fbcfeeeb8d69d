import { mount } from '@vue/test-utils';
import Echo2 from 'laravel-echo-2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defineComponent, effectScope, h, nextTick, reactive } from 'vue';
import { createRealtime, useRealtime } from '../src/useRealtime.js';
import { WebSocketService } from '../src/WebSocketService.js';
import { fakeIo } from './fakeStack.js';

function makeService() {
    const io = fakeIo();
    const service = new WebSocketService({
        echo: { Echo: Echo2, io, host: 'http://127.0.0.1:6001' }, random: () => 0,
        window: null, logger: null,
    });
    return { service, io, socket: () => io.sockets[0] };
}

// A component that listens like the seed's pieces do.
const Listener = defineComponent({
    props: { leadId: { type: [Number, String], required: true }, log: { type: Array, required: true } },
    setup(props) {
        const rt = useRealtime();
        rt.subscribeToLead(props.leadId, (d) => props.log.push(['lead', props.leadId, d.lead.id]));
        rt.subscribeToAdminUpdates((d) => props.log.push(['capacity', d.admin.id]));
        rt.listenPrivate('admin-dashboard.5', '.lead.assigned', (d) => props.log.push(['personal', d.lead.id]));
        rt.join('leads-management', { members: (m) => props.log.push(['members', m.length]) });
        return () => h('span', rt.isConnected.value ? 'on' : 'off');
    },
});

describe('useRealtime', () => {
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    it('needs the plugin', () => {
        const Bare = defineComponent({ setup() { useRealtime(); return () => null; } });
        expect(() => mount(Bare, { global: { config: { warnHandler() {} } } })).toThrow(/createRealtime/);
    });

    it('removes exactly what a component registered when it unmounts; the connection stays', async () => {
        const { service, socket } = makeService();
        const log = [];
        const shown = reactive({ a: true, b: true });
        const Page = defineComponent({
            setup: () => () => h('div', [
                shown.a ? h(Listener, { leadId: 1, log, key: 'a' }) : null,
                shown.b ? h(Listener, { leadId: '2', log, key: 'b' }) : null,
            ]),
        });
        const page = mount(Page, { global: { plugins: [createRealtime(service)] } });
        const a = { text: () => page.text().slice(0, 2), unmount: async () => { shown.a = false; await nextTick(); } };
        const b = { unmount: async () => { shown.b = false; await nextTick(); } };
        socket().accept();
        await nextTick();
        expect(a.text()).toBe('on');
        const listeners = () => ['lead.assigned', 'admin.capacity.updated', 'presence:subscribed']
            .map((e) => socket().count(e));
        expect(listeners()).toEqual([2, 1, 1]);  // one socket listener per channel and event

        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 2 } });
        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 1 } });
        socket().deliver('admin.capacity.updated', 'leads-management', { admin: { id: 7 } });
        expect(log).toEqual([['lead', '2', 2], ['lead', 1, 1], ['capacity', 7], ['capacity', 7]]);

        log.length = 0;
        await a.unmount();
        expect(service.state.status).toBe('connected');  // the seed disconnected everyone here
        expect(socket().unsubscribes()).toEqual([]);      // b still uses every channel
        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 2 } });
        socket().deliver('admin.capacity.updated', 'leads-management', { admin: { id: 8 } });
        socket().deliver('lead.assigned', 'private-admin-dashboard.5', { lead: { id: 9 } });
        expect(log).toEqual([['lead', '2', 2], ['capacity', 8], ['personal', 9]]);

        await b.unmount();
        expect(listeners()).toEqual([0, 0, 0]);
        expect(socket().unsubscribes().sort()).toEqual(
            ['leads-management', 'presence-leads-management', 'private-admin-dashboard.5']);
        expect(service.channelNames()).toEqual([]);
    });

    it('follows the real status and offers reconnect', async () => {
        const { service, socket } = makeService();
        const scope = effectScope();
        const rt = scope.run(() => useRealtime(service));
        expect(rt.connectionStatus.value).toBe('connecting');
        socket().accept();
        expect(rt.isConnected.value).toBe(true);
        socket().drop('transport close');
        expect(rt.connectionStatus.value).toBe('disconnected');
        expect(rt.retryIn.value).toBe(1);
        rt.reconnect();
        expect(rt.connectionStatus.value).toBe('connecting');
        await Promise.resolve();
        expect(socket().connectCalls).toBe(1);
        scope.stop();
        expect(service.state.status).toBe('connecting');  // the scope ending leaves it running
    });

    it('an unsubscribe function removes one registration early', () => {
        const { service, socket } = makeService();
        const scope = effectScope();
        const log = [];
        const off = scope.run(() => useRealtime(service).subscribeToLead(3, (d) => log.push(d.lead.id)));
        socket().accept();
        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 3 } });
        off();
        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 3 } });
        expect(log).toEqual([3]);
        scope.stop();  // nothing left to remove, no error
        expect(socket().count('lead.assigned')).toBe(0);
    });

    it('lastUpdate follows delivered events', () => {
        const { service, socket } = makeService();
        const scope = effectScope();
        const rt = scope.run(() => useRealtime(service));
        rt.listen('leads-management', '.lead.assigned', () => {});
        expect(rt.lastUpdate.value).toBeNull();
        socket().accept();
        socket().deliver('lead.assigned', 'leads-management', { lead: { id: 1 } });
        expect(rt.lastUpdate.value).toBeInstanceOf(Date);
        scope.stop();
    });

    it('the app unmounting stops the service', () => {
        const { service } = makeService();
        const Root = defineComponent({ setup() { useRealtime(); return () => null; } });
        const wrapper = mount(Root, { global: { plugins: [createRealtime(service)] } });
        expect(service.state.status).toBe('connecting');
        wrapper.unmount();
        expect(service.state.status).toBe('stopped');
    });
});
