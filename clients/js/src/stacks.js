// The two client generations echo-server serves, for `createEcho({...STACKS[name], host})`.
// Importing this module bundles both; an app that uses one stack imports its own Echo and io.
import Echo1Module from 'laravel-echo-1';
import Echo2 from 'laravel-echo-2';
import io2 from 'socket.io-client-2';
import { io as io4 } from 'socket.io-client-4';

// laravel-echo 1.x is CommonJS for Node ("main"), ESM for bundlers ("module"): in Node the
// default import is its exports object, whose `default` is the class.
const Echo1 = typeof Echo1Module === 'function' ? Echo1Module : Echo1Module.default;

export const STACKS = Object.freeze({
    'echo1-sio2': { Echo: Echo1, io: io2 },   // Engine.IO 3: what laravel-echo-server speaks
    'echo2-sio4': { Echo: Echo2, io: io4 },   // Engine.IO 4
});

export const DEFAULT_STACK = 'echo2-sio4';
