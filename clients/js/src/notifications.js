// Browser notifications without assuming they exist. The seed called `Notification.permission`
// unguarded: a ReferenceError in browsers without the API (iOS Safari outside a home-screen
// app, embedded webviews) and in tests; and Chrome on Android throws on `new Notification()`.

function host(win) {
    if (win !== undefined) return win;
    return typeof window !== 'undefined' ? window : null;
}

export function notificationsSupported(win) {
    const w = host(win);
    return Boolean(w && 'Notification' in w && typeof w.Notification === 'function');
}

export function notificationPermission(win) {
    const w = host(win);
    return notificationsSupported(w) ? w.Notification.permission : 'unsupported';
}

/**
 * Ask for permission (call it from a click: browsers ignore or penalise unprompted asks).
 * Resolves to 'granted' | 'denied' | 'default' | 'unsupported'; never rejects.
 */
export async function requestNotificationPermission(win) {
    const w = host(win);
    if (!notificationsSupported(w)) return 'unsupported';
    if (w.Notification.permission !== 'default') return w.Notification.permission;
    try {
        // Old Safari takes a callback and returns undefined instead of a promise.
        return await new Promise((resolve) => {
            const result = w.Notification.requestPermission(resolve);
            if (result && typeof result.then === 'function') result.then(resolve, () => resolve('denied'));
        });
    } catch {
        return 'denied';
    }
}

/** Show a notification when allowed; returns it, or null when it could not be shown. */
export function showNotification(title, options = {}, win) {
    const w = host(win);
    if (notificationPermission(w) !== 'granted') return null;
    try {
        return new w.Notification(title, options);
    } catch {
        return null;  // e.g. Chrome on Android: only a service worker may show them
    }
}
