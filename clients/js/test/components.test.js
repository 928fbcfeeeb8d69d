import { mount } from '@vue/test-utils';
import Echo2 from 'laravel-echo-2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { nextTick } from 'vue';
import RealtimeAssignmentDropdown from '../src/components/RealtimeAssignmentDropdown.vue';
import RealtimeIndicator from '../src/components/RealtimeIndicator.vue';
import {
    notificationPermission, requestNotificationPermission, showNotification,
} from '../src/notifications.js';
import { createRealtime } from '../src/useRealtime.js';
import { WebSocketService } from '../src/WebSocketService.js';
import { fakeIo } from './fakeStack.js';

function makeService(backoff = { base: 3000, max: 3000, jitter: 0 }) {
    const io = fakeIo();
    const service = new WebSocketService({
        echo: { Echo: Echo2, io, host: 'http://127.0.0.1:6001' }, backoff, window: null, logger: null,
    });
    return { service, socket: () => io.sockets[0] };
}

describe('RealtimeIndicator', () => {
    beforeEach(() => vi.useFakeTimers());
    afterEach(() => vi.useRealTimers());

    it('shows the seed labels for the real states, the countdown and the button', async () => {
        const { service, socket } = makeService();
        const wrapper = mount(RealtimeIndicator, { global: { plugins: [createRealtime(service)] } });
        const text = () => wrapper.get('[data-test=status-text]').text();
        expect(text()).toBe('Bağlanıyor...');
        expect(wrapper.find('[data-test=reconnect]').exists()).toBe(false);

        socket().accept();
        await nextTick();
        expect(text()).toBe('Canlı');
        expect(wrapper.attributes('data-status')).toBe('connected');

        socket().drop('transport close');
        await nextTick();
        expect(text()).toBe('Bağlantı Kesildi');
        expect(wrapper.get('[data-test=retry]').text()).toBe('3 sn içinde yeniden denenecek');
        await vi.advanceTimersByTimeAsync(1000);
        expect(wrapper.get('[data-test=retry]').text()).toBe('2 sn içinde yeniden denenecek');
        await vi.advanceTimersByTimeAsync(2000);
        expect(wrapper.get('[data-test=retry]').text()).toBe('Yeniden deneniyor...');
        expect(socket().connectCalls).toBe(1);

        socket().refuse('xhr poll error');
        await nextTick();
        const button = wrapper.get('[data-test=reconnect]');
        expect(button.text()).toBe('Yeniden Bağlan');
        await button.trigger('click');
        expect(text()).toBe('Bağlanıyor...');
        await Promise.resolve();
        expect(socket().connectCalls).toBe(2);
        socket().accept();
        await nextTick();
        expect(text()).toBe('Canlı');
        wrapper.unmount();
    });
});

describe('RealtimeAssignmentDropdown', () => {
    const admins = [{ id: 1, name: 'Ayşe Yılmaz' }, { id: 2, name: 'Mehmet Demir' }];
    const update = (leadId, newAdmin, by) => ({
        lead: { id: leadId, name: 'Zeynep Kaya' },
        assignment: { new_admin: newAdmin, old_admin: null, assigned_by: { id: by }, type: 'initial_assignment' },
    });

    function mountDropdown(props = {}) {
        const { service, socket } = makeService();
        const wrapper = mount(RealtimeAssignmentDropdown, {
            props: { leadId: 42, currentAssignment: null, admins, currentAdminId: 1, ...props },
            global: { plugins: [createRealtime(service)] },
        });
        socket().accept();
        return { wrapper, socket, service };
    }

    it("another admin's change: a notice, and Güncelle takes it", async () => {
        const { wrapper, socket } = mountDropdown();
        socket().deliver('lead.assigned', 'leads-management', update(41, admins[1], 2));
        await nextTick();
        expect(wrapper.find('[data-test=update-notice]').exists()).toBe(false);  // another lead

        socket().deliver('lead.assigned', 'leads-management', update(42, admins[1], 2));
        await nextTick();
        const notice = wrapper.get('[data-test=update-notice]');
        expect(notice.text()).toContain("Bu lead'in ataması değişti");
        expect(wrapper.get('select').element.value).toBe('');  // not changed under the user
        await wrapper.get('[data-test=accept-update]').trigger('click');
        await nextTick();
        expect(wrapper.find('[data-test=update-notice]').exists()).toBe(false);
        expect(wrapper.get('select').element.value).toBe('2');
        expect(wrapper.emitted('updated')[0][0]).toMatchObject({ leadId: 42, newAssignment: admins[1] });
        wrapper.unmount();
        expect(socket().count('lead.assigned')).toBe(0);
    });

    it('its own change (another tab of the same admin): applied without a notice', async () => {
        const { wrapper, socket } = mountDropdown();
        socket().deliver('lead.assigned', 'leads-management', update(42, admins[1], 1));
        await nextTick();
        expect(wrapper.find('[data-test=update-notice]').exists()).toBe(false);
        expect(wrapper.get('select').element.value).toBe('2');
    });

    it('choosing calls assign and emits assigned; a failure restores the selection', async () => {
        const assign = vi.fn().mockResolvedValueOnce({ ok: true }).mockRejectedValueOnce(new Error('409'));
        const { wrapper } = mountDropdown({ assign, currentAssignment: admins[0] });
        expect(wrapper.get('select').element.value).toBe('1');
        await wrapper.get('select').setValue('2');
        await vi.waitFor(() => expect(wrapper.emitted('assigned')).toBeTruthy());
        expect(assign).toHaveBeenCalledWith(42, '2');
        expect(wrapper.emitted('assigned')[0][0]).toEqual({ leadId: 42, adminId: '2', result: { ok: true } });

        await wrapper.get('select').setValue('');
        await vi.waitFor(() => expect(wrapper.emitted('error')).toBeTruthy());
        await nextTick();
        expect(wrapper.get('select').element.value).toBe('2');
        expect(wrapper.get('[data-test=assign-error]').text()).toBe('Atama yapılamadı');
    });

    it('follows the parent when no notice is waiting', async () => {
        const { wrapper } = mountDropdown({ currentAssignment: admins[0] });
        await wrapper.setProps({ currentAssignment: admins[1] });
        expect(wrapper.get('select').element.value).toBe('2');
    });
});

describe('notifications', () => {
    it('without the Notification API nothing throws', async () => {
        const win = {};
        expect(notificationPermission(win)).toBe('unsupported');
        expect(await requestNotificationPermission(win)).toBe('unsupported');
        expect(showNotification('x', {}, win)).toBeNull();
    });

    it('shows only when granted, and survives a throwing constructor (Android Chrome)', async () => {
        class Granted { static permission = 'granted'; constructor(title) { this.title = title; } }
        expect(showNotification('Yeni lead', {}, { Notification: Granted }).title).toBe('Yeni lead');
        class Throws { static permission = 'granted'; constructor() { throw new TypeError('Illegal constructor'); } }
        expect(showNotification('x', {}, { Notification: Throws })).toBeNull();
        class Denied { static permission = 'denied'; }
        expect(showNotification('x', {}, { Notification: Denied })).toBeNull();
        class Asks {
            static permission = 'default';
            static requestPermission(callback) { callback('granted'); }  // old Safari style
        }
        expect(await requestNotificationPermission({ Notification: Asks })).toBe('granted');
        class AsksPromise { static permission = 'default'; static requestPermission() { return Promise.resolve('denied'); } }
        expect(await requestNotificationPermission({ Notification: AsksPromise })).toBe('denied');
    });
});
