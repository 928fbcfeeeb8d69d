// Exponential backoff with jitter, without a limit on the number of attempts.
//
// The seed multiplied a fixed 5 s by the attempt number (linear) and gave up after five tries;
// a page left open over a long server outage then stayed dead until reloaded. Here the delay
// doubles from `base` up to `max` and keeps being retried for as long as the page lives. The
// jitter spreads the retries of many tabs so that a restarted server is not hit by all of
// them in the same instant.

export const DEFAULT_BACKOFF = Object.freeze({
    base: 1000,     // ms before the first retry (before jitter)
    factor: 2,      // growth per failed attempt
    max: 30000,     // ms: the delay stops growing here; attempts never stop
    jitter: 0.5,    // a delay is drawn from [(1 - jitter) * d, d]
});

/**
 * The wait before retry number `attempt` (0 for the first retry after a failure).
 * `random` returns [0, 1) like Math.random; tests pass a fixed one.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const { base, factor, max, jitter } = { ...DEFAULT_BACKOFF, ...options };
    const exponent = Math.max(0, Math.floor(attempt));
    // Computed in log space so that a long outage (attempt 2000) cannot overflow to Infinity.
    const grown = base * Math.pow(factor, Math.min(exponent, 1024));
    const ceiling = Math.min(Number.isFinite(grown) ? grown : max, max);
    const spread = Math.min(Math.max(jitter, 0), 1);
    return Math.round(ceiling * (1 - spread * random()));
}
