export { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { createEcho, socketIoProtocol, tokenExpiry } from './echo.js';
export { LABELS } from './labels.js';
export {
    notificationPermission, notificationsSupported, requestNotificationPermission, showNotification,
} from './notifications.js';
export {
    CAPACITY_UPDATED, connectionStatusOf, createRealtime, LEAD_ASSIGNED, LEADS_CHANNEL, REALTIME_KEY,
    useRealtime,
} from './useRealtime.js';
export { STATUS, WebSocketService } from './WebSocketService.js';
export { default as RealtimeIndicator } from './components/RealtimeIndicator.vue';
export { default as RealtimeAssignmentDropdown } from './components/RealtimeAssignmentDropdown.vue';
