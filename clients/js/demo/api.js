// The demo backend (echo_server/demo/app.py plays the Laravel app): login by `?admin=<id>`, a JWT
// that is both echo-server's handshake token and the Bearer of /broadcasting/auth, the leads
// (with the admins online as the backend knows them from echo-server's webhooks) and the
// assignment endpoint, which broadcasts `lead.assigned` and `admin.capacity.updated` to the
// others (X-Socket-ID, as Laravel's toOthers()).

export class DemoApi {
    constructor(base) {
        this.base = base.replace(/\/+$/, '');
        this.token = null;
    }

    async request(method, path, { body, socketId } = {}) {
        const headers = { Accept: 'application/json' };
        if (this.token) headers.Authorization = `Bearer ${this.token}`;
        if (body !== undefined) headers['Content-Type'] = 'application/json';
        if (socketId) headers['X-Socket-ID'] = socketId;
        const response = await fetch(this.base + path, {
            method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
        const data = await response.json().catch(() => ({}));
        if (!response.ok) {
            const error = new Error(data.message || `${method} ${path}: HTTP ${response.status}`);
            error.status = response.status;
            throw error;
        }
        return data;
    }

    async login(adminId) {
        const data = await this.request('GET', `/api/session?admin=${encodeURIComponent(adminId)}`);
        this.token = data.token;
        return data;
    }

    async refreshToken() {
        const data = await this.request('POST', '/api/token');
        this.token = data.token;
        return data.token;
    }

    leads() {
        return this.request('GET', '/api/leads');
    }

    assign(leadId, adminId, socketId) {
        return this.request('POST', `/api/leads/${encodeURIComponent(leadId)}/assign`, {
            body: { admin_id: adminId === null ? null : Number(adminId) }, socketId,
        });
    }
}
