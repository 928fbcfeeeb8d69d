#!/usr/bin/env node
// Drives the lead-management demo (/demo) in headless Chromium: several pages, each in its own
// browser context (its own storage: two admins side by side), and reports what a person would
// see, read off the rendered DOM, as JSON lines. Debian's /usr/bin/chromium via playwright-core;
// never a downloaded browser.
//
// pytest (tests/test_demo_e2e.py) spawns it, sends commands on stdin, reads reports on stdout;
// between commands it stops and starts echo-server itself.
//
//   node demo_e2e.mjs [--executable /usr/bin/chromium] [--width 1280] [--height 900]
//
// Commands (`id` is echoed back; `page` names a page):
//   {"cmd":"open", "page":"A", "url":U}          -> {"type":"opened", view}  (after the app started)
//   {"cmd":"view", "page":"A"}                   -> {"type":"view", view}
//   {"cmd":"wait", "page":"A", "want":{...}, "timeout":MS}
//                                                -> {"type":"waited", "ok":bool, "ms":n, view}
//   {"cmd":"select", "page":"A", "lead":101, "admin":"2"}   choose in the lead's dropdown
//   {"cmd":"click", "page":"A", "selector":S}
//   {"cmd":"eval", "page":"A", "expr":"window.demo.refreshToken()"} -> {"type":"value", "value"}
//   {"cmd":"screenshot", "page":"A", "path":P}
//   {"cmd":"close", "page":"A"}                  closes the page and its context
//   {"cmd":"problems"}                           -> {"type":"problems", "pages":{name:[text]}}
//   {"cmd":"exit"} (or EOF)                      closes the browser, exits 0
// Every command gets {"type":"done", "id", "ok", "error"?} unless it has its own answer type.
//
// view = {ready, status, statusText, retryText, me, online:[ids], onlineLaravel:[ids], toasts:[text],
//         leads:{id:{assignee, selected, notice}}, capacity:{adminId:count},
//         socketId, reconnects, recovered, tokenRefreshes, stack}
// `online` is who presence shows; `onlineLaravel` who the backend knows is online (from the
// server's webhooks).
// A `want` is matched partially: every key given must be equal (objects recursively, arrays as
// a whole); `toastsInclude` is a list of substrings that some toast must contain each.
// Problems are uncaught page errors and failed app requests (not the socket's own failed
// attempts while the server is down, which are expected there).

import { createInterface } from 'node:readline';
import { launch, out, parseArgs as parseOptions } from './browser.mjs';

function parseArgs(argv) {
    const opts = parseOptions(argv, { height: 900 }, []);
    return opts;
}

// Runs inside the page.
function readView() {
    const text = (node) => (node ? node.textContent.replace(/\s+/g, ' ').trim() : null);
    const view = {
        ready: document.body.dataset.ready || null, leads: {}, capacity: {}, online: [], onlineLaravel: [], toasts: [],
    };
    const indicator = document.querySelector('.realtime-indicator');
    view.status = indicator ? indicator.dataset.status : null;
    // What the indicator says of the last reconnect: the same session, with what it missed.
    view.recovered = indicator ? indicator.dataset.recovered === 'true' : null;
    view.statusText = text(document.querySelector('[data-test=status-text]'));
    view.retryText = text(document.querySelector('[data-test=retry]'));
    view.me = text(document.querySelector('[data-test=me]'));
    for (const row of document.querySelectorAll('tr[data-lead-id]')) {
        view.leads[row.dataset.leadId] = {
            assignee: text(row.querySelector('[data-test=assignee]')),
            selected: row.querySelector('select') ? row.querySelector('select').value : null,
            notice: Boolean(row.querySelector('[data-test=update-notice]')),
        };
    }
    for (const bar of document.querySelectorAll('[data-capacity-admin]')) {
        view.capacity[bar.dataset.capacityAdmin] = Number(bar.dataset.current);
    }
    for (const [key, list] of [['online', 'online'], ['onlineLaravel', 'online-laravel']]) {
        for (const item of document.querySelectorAll(`[data-test=${list}] li[data-admin-id]`)) {
            view[key].push(Number(item.dataset.adminId));
        }
        view[key].sort((a, b) => a - b);
    }
    for (const toast of document.querySelectorAll('[data-test=toast]')) view.toasts.push(text(toast));
    const demo = window.demo;
    view.socketId = demo ? demo.service.socketId() : null;
    view.reconnects = demo ? demo.service.state.reconnects : null;
    view.tokenRefreshes = demo ? demo.store.tokenRefreshes : null;
    view.stack = demo ? demo.store.stack : null;
    return view;
}

function partialMatch(got, want) {
    if (want === null || typeof want !== 'object' || Array.isArray(want)) {
        return JSON.stringify(got) === JSON.stringify(want);
    }
    if (got === null || typeof got !== 'object') return false;
    return Object.entries(want).every(([key, value]) => partialMatch(got[key], value));
}

function matches(view, want) {
    const { toastsInclude = [], ...rest } = want;
    return partialMatch(view, rest)
        && toastsInclude.every((needle) => view.toasts.some((t) => t.includes(needle)));
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const browser = await launch(opts);
    const pages = new Map();     // name -> {context, page}
    const problems = {};

    const pageOf = (name) => {
        const entry = pages.get(name);
        if (!entry) throw new Error(`no page ${name}`);
        return entry.page;
    };

    async function open(name, url) {
        const context = await browser.newContext({ viewport: { width: opts.width, height: opts.height },
                                                   locale: 'tr-TR' });
        const page = await context.newPage();
        const list = (problems[name] = problems[name] || []);
        page.on('pageerror', (err) => list.push(`pageerror: ${err.message}`));
        page.on('requestfailed', (req) => {
            if (!req.url().includes('/socket.io/')) list.push(`requestfailed: ${req.url()}`);
        });
        page.on('response', (res) => {
            if (res.status() >= 400 && !res.url().includes('/socket.io/')) {
                list.push(`http ${res.status()}: ${res.url()}`);
            }
        });
        pages.set(name, { context, page });
        const response = await page.goto(url, { waitUntil: 'load' });
        if (!response || !response.ok()) {
            throw new Error(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
        }
        await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 10000 });
        const view = await page.evaluate(readView);
        if (view.ready !== '1') throw new Error(`the demo did not start: ${await page.textContent('#app')}`);
        return view;
    }

    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) {
        if (!line.trim()) continue;
        const msg = JSON.parse(line);
        const id = msg.id ?? null;
        try {
            if (msg.cmd === 'open') {
                out({ type: 'opened', id, ...(await open(msg.page, msg.url)) });
            } else if (msg.cmd === 'view') {
                out({ type: 'view', id, ...(await pageOf(msg.page).evaluate(readView)) });
            } else if (msg.cmd === 'wait') {
                const page = pageOf(msg.page);
                const started = Date.now();
                const deadline = started + (msg.timeout ?? 10000);
                let view = await page.evaluate(readView);
                while (!matches(view, msg.want) && Date.now() < deadline) {
                    await new Promise((resolve) => setTimeout(resolve, 50));
                    view = await page.evaluate(readView);
                }
                out({ type: 'waited', id, ok: matches(view, msg.want), ms: Date.now() - started, ...view });
            } else if (msg.cmd === 'select') {
                await pageOf(msg.page).selectOption(`tr[data-lead-id="${msg.lead}"] select`, String(msg.admin));
                out({ type: 'done', id, ok: true });
            } else if (msg.cmd === 'click') {
                await pageOf(msg.page).click(msg.selector, { timeout: 5000 });
                out({ type: 'done', id, ok: true });
            } else if (msg.cmd === 'eval') {
                const value = await pageOf(msg.page).evaluate(msg.expr);
                out({ type: 'value', id, value: value === undefined ? null : value });
            } else if (msg.cmd === 'screenshot') {
                await pageOf(msg.page).screenshot({ path: msg.path, fullPage: true });
                out({ type: 'done', id, ok: true });
            } else if (msg.cmd === 'close') {
                const entry = pages.get(msg.page);
                pages.delete(msg.page);
                if (entry) await entry.context.close();
                out({ type: 'done', id, ok: true });
            } else if (msg.cmd === 'problems') {
                out({ type: 'problems', id, pages: problems });
            } else if (msg.cmd === 'exit') {
                break;
            } else {
                throw new Error(`unknown command ${msg.cmd}`);
            }
        } catch (err) {
            out({ type: 'done', id, ok: false, error: err instanceof Error ? err.message : String(err) });
        }
    }
    await browser.close().catch(() => {});
    process.exit(0);
}

main().catch((err) => {
    out({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
});
