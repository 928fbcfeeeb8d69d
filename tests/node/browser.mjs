// What the browser drivers (status_page.mjs, demo_e2e.mjs) share: Debian's chromium through
// playwright-core (never a downloaded browser), with the flags this sandbox needs, command-line
// options, and JSON lines on stdout.

import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

export function out(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

// `--executable`, `--width`, `--height`, plus the names in `extra` (string options).
export function parseArgs(argv, defaults, extra = []) {
    const opts = { executable: '/usr/bin/chromium', width: 1280, height: 900, ...defaults };
    for (let i = 0; i < argv.length; i += 2) {
        const [flag, value] = [argv[i], argv[i + 1]];
        if (value === undefined) throw new Error(`missing value for ${flag}`);
        const name = flag.replace(/^--/, '');
        if (name === 'width' || name === 'height') opts[name] = Number(value);
        else if (name === 'executable' || extra.includes(name)) opts[name] = value;
        else throw new Error(`unknown option ${flag}`);
    }
    return opts;
}

export function launch(opts) {
    return chromium.launch({ executablePath: opts.executable, headless: true, args: CHROMIUM_ARGS });
}
