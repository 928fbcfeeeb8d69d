// The client stacks echo-server serves, for `createEcho({...STACKS[name], host})`.
// Importing this module bundles them all; an app that uses one stack imports its own.
import Echo1Module from 'laravel-echo-1';
import Echo2 from 'laravel-echo-2';
import Pusher from 'pusher-js';
import io2 from 'socket.io-client-2';
import { io as io4 } from 'socket.io-client-4';

// laravel-echo 1.x is CommonJS for Node ("main"), ESM for bundlers ("module"): in Node the
// default import is its exports object, whose `default` is the class.
const Echo1 = typeof Echo1Module === 'function' ? Echo1Module : Echo1Module.default;

export const STACKS = Object.freeze({
    'echo1-sio2': { Echo: Echo1, io: io2 },   // Engine.IO 3: what laravel-echo-server speaks
    'echo2-sio4': { Echo: Echo2, io: io4 },   // Engine.IO 4
    // Echo's `reverb` broadcaster: the Pusher protocol at /app/{key}; needs the app `key`, and
    // `authEndpoint` (the app's /broadcasting/auth, which pusher-js asks for signatures).
    'echo2-reverb': { Echo: Echo2, Pusher },
});

export const DEFAULT_STACK = 'echo2-sio4';
