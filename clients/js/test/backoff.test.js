import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../src/backoff.js';

describe('backoffDelay', () => {
    const noJitter = () => 0;

    it('doubles from the base up to the ceiling', () => {
        const delays = Array.from({ length: 8 }, (_, n) =>
            backoffDelay(n, { base: 1000, max: 30000 }, noJitter));
        expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    });

    it('is exponential, not linear (the seed waited 5 s × attempt)', () => {
        const d = (n) => backoffDelay(n, { base: 500, max: 1e9 }, noJitter);
        expect(d(4) / d(3)).toBe(2);
        expect(d(10)).toBe(500 * 1024);
    });

    it('jitter draws from [(1 - jitter) * d, d]', () => {
        expect(backoffDelay(2, { base: 1000, jitter: 0.5 }, () => 0.999999)).toBe(2000);
        expect(backoffDelay(2, { base: 1000, jitter: 0.5 }, () => 0)).toBe(4000);
        expect(backoffDelay(2, { base: 1000, jitter: 0.5 }, () => 0.5)).toBe(3000);
        const many = new Set(Array.from({ length: 50 }, () => backoffDelay(3, { base: 1000 })));
        expect(many.size).toBeGreaterThan(10);  // tabs do not retry in lockstep
        for (const d of many) expect(d >= 4000 && d <= 8000).toBe(true);
    });

    it('stays finite for any number of attempts', () => {
        expect(backoffDelay(100000, { base: 1000, max: 30000 }, noJitter)).toBe(30000);
        expect(backoffDelay(-3, { base: 1000 }, noJitter)).toBe(1000);
    });
});
