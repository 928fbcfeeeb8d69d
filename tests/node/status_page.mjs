#!/usr/bin/env node
// Drives the /status page in headless Chromium (Debian's /usr/bin/chromium via playwright-core;
// never a downloaded browser) and reports what a human would see, as JSON lines.
//
// pytest (tests/test_status_page.py) spawns it, sends commands on stdin, reads reports on stdout.
// What is reported is read off the rendered DOM (the [data-figure] elements and the tables), not
// off /status.json, so a test that passes here saw the numbers on the page itself.
//
//   node status_page.mjs --url 'http://127.0.0.1:6001/status?auth_key=KEY'
//       [--executable /usr/bin/chromium] [--width 1280] [--height 1000]
//
// Reports: {"type":"ready", ...view} once the page has rendered its first update;
// {"type":"console_error", "text"} for every console error, page error, failed request, HTTP
// error answer or dialog (an alert() would mean injected markup ran), as it happens; {"type":"fatal", "message"} before exiting 1.
// Commands (`id` is echoed back):
//   {"cmd":"view"}                               -> {"type":"view", ...view}
//   {"cmd":"wait", "figures":{"connections":"4"}, "channels":{"name":"3"},
//    "presence":{"name":"2"}, "nonzero":["messages-rate"], "timeout":MS}
//                                                -> {"type":"waited", "ok":bool, ...view}
//   {"cmd":"screenshot", "path":P}               -> {"type":"screenshot", "path":P}
//   {"cmd":"errors"}                             -> {"type":"errors", "errors":[...]}
//   {"cmd":"exit"} (or EOF on stdin)             -> closes the browser and exits 0
// where view = {figures:{name:text}, channels:{name:text}, presence:{name:{members,sockets}},
//               errors:{kind:text}, sources:[text], live:text, updates:n}.

import { createInterface } from 'node:readline';
import { launch, out, parseArgs as parseOptions } from './browser.mjs';

function parseArgs(argv) {
    const opts = parseOptions(argv, { height: 1000 }, ['url']);
    if (!opts.url) throw new Error('usage: node status_page.mjs --url URL [--executable PATH]');
    return opts;
}

// Runs inside the page: the visible numbers, as text.
function readView() {
    const text = (node) => (node ? node.textContent.trim() : null);
    const view = { figures: {}, channels: {}, presence: {}, errors: {}, sources: [] };
    for (const node of document.querySelectorAll('[data-figure]')) {
        view.figures[node.dataset.figure] = text(node);
    }
    for (const row of document.querySelectorAll('#channels tr[data-channel]')) {
        view.channels[row.dataset.channel] = text(row.cells[1]);
    }
    for (const row of document.querySelectorAll('#presence tr[data-presence]')) {
        view.presence[row.dataset.presence] = { members: text(row.cells[1]), sockets: text(row.cells[2]) };
    }
    for (const row of document.querySelectorAll('#errors tr[data-error]')) {
        view.errors[row.dataset.error] = text(row.cells[1]);
    }
    for (const item of document.querySelectorAll('#sources [data-source]')) {
        view.sources.push(text(item));
    }
    view.live = text(document.getElementById('live-text'));
    view.updates = Number(document.body.dataset.updates || 0);
    return view;
}

function toNumber(shown) {
    return Number(String(shown ?? '').replace(/,/g, ''));
}

function matches(view, spec) {
    for (const [name, want] of Object.entries(spec.figures || {})) {
        if (view.figures[name] !== String(want)) return false;
    }
    for (const [name, want] of Object.entries(spec.channels || {})) {
        if (view.channels[name] !== String(want)) return false;
    }
    for (const [name, want] of Object.entries(spec.presence || {})) {
        if (!view.presence[name] || view.presence[name].members !== String(want)) return false;
    }
    for (const name of spec.nonzero || []) {
        if (!(toNumber(view.figures[name]) > 0)) return false;
    }
    return true;
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const errors = [];
    const problem = (text) => {
        errors.push(text);
        out({ type: 'console_error', text });
    };
    const browser = await launch(opts);
    const close = async (code) => {
        await browser.close().catch(() => {});
        process.exit(code);
    };
    try {
        const page = await browser.newPage({ viewport: { width: opts.width, height: opts.height } });
        page.on('console', (msg) => { if (msg.type() === 'error') problem(`console: ${msg.text()}`); });
        page.on('pageerror', (err) => problem(`pageerror: ${err.message}`));
        page.on('requestfailed', (req) => {
            problem(`requestfailed: ${req.url()} ${req.failure()?.errorText ?? ''}`);
        });
        page.on('dialog', (dialog) => {  // an alert() here means injected markup ran
            problem(`dialog: ${dialog.type()} ${dialog.message()}`);
            dialog.dismiss().catch(() => {});
        });
        page.on('response', (res) => {
            if (res.status() >= 400) problem(`http ${res.status()}: ${res.url()}`);
        });
        const response = await page.goto(opts.url, { waitUntil: 'load' });
        if (!response || !response.ok()) {
            throw new Error(`GET ${opts.url} answered ${response ? response.status() : 'nothing'}`);
        }
        await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1,
                                   null, { timeout: 10000 });
        out({ type: 'ready', ...(await page.evaluate(readView)) });

        const lines = createInterface({ input: process.stdin });
        for await (const line of lines) {
            if (!line.trim()) continue;
            const msg = JSON.parse(line);
            const id = msg.id ?? null;
            if (msg.cmd === 'view') {
                out({ type: 'view', id, ...(await page.evaluate(readView)) });
            } else if (msg.cmd === 'wait') {
                const deadline = Date.now() + (msg.timeout ?? 10000);
                let view = await page.evaluate(readView);
                while (!matches(view, msg) && Date.now() < deadline) {
                    await new Promise((resolve) => setTimeout(resolve, 100));
                    view = await page.evaluate(readView);
                }
                out({ type: 'waited', id, ok: matches(view, msg), ...view });
            } else if (msg.cmd === 'screenshot') {
                await page.screenshot({ path: msg.path, fullPage: true });
                out({ type: 'screenshot', id, path: msg.path });
            } else if (msg.cmd === 'errors') {
                out({ type: 'errors', id, errors });
            } else if (msg.cmd === 'exit') {
                break;
            } else {
                out({ type: 'error', id, message: `unknown command ${msg.cmd}` });
            }
        }
        await close(0);
    } catch (err) {
        out({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
        await close(1);
    }
}

main().catch((err) => {
    out({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
});
