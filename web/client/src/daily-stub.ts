/**
 * Stands in for `@daily-co/daily-js` in the bundle (see vite.config.ts).
 *
 * The Pipecat transports import daily-js only for their default media manager, which
 * loads Daily's call machine from a CDN. This client always passes its own media manager
 * (media.ts), so daily-js would be dead weight (~400 kB); if that ever changes, this
 * fails loudly instead of reaching for the network.
 */
const unavailable = (): never => {
  throw new Error("daily-js is not bundled: give the transport a mediaManager (see media.ts)");
};

export default { getCallInstance: () => undefined, createCallObject: unavailable };
