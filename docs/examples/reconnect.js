// A browser WebSocket that follows closeguard's retry contract: it comes back after a drain,
// a restart or a policy's close, without a reconnect storm, and stops where retrying is futile.
//
// Reconnect at once, after a short random wait: 1001 (Going Away: idle_timeout, max_lifetime)
// and 1012 (Service Restart: a drain, a deploy). Back off, waiting longer each time: 1013 (Try
// Again Later: over_capacity), 1011 (Internal Error) and 1006 (no Close frame: a dropped
// connection, a server that is down, or a handshake refused with HTTP 503, which a browser
// reports as 1006). Every other code is final: 1000 is an ordinary end, 1008 and 1009 say "do
// not do that again" (rate_limited, first_message_timeout, a message too big).
const RECONNECT_CODES = new Set([1001, 1012]);
const BACK_OFF_CODES = new Set([1006, 1011, 1013]);

function reconnectingWebSocket(url, handlers = {}, options = {}) {
  const { baseDelay = 1000, maxDelay = 30000, stableAfter = 10000 } = options;
  let failures = 0;
  let openedAt = 0;
  let stopped = false;
  let socket = null;

  function open() {
    socket = new WebSocket(url);
    socket.onopen = (event) => {
      openedAt = Date.now();
      handlers.onopen?.(event, socket);
    };
    socket.onmessage = (event) => handlers.onmessage?.(event, socket);
    socket.onclose = (event) => {
      handlers.onclose?.(event);
      const backOff = BACK_OFF_CODES.has(event.code);
      if (stopped || !(backOff || RECONNECT_CODES.has(event.code))) return;
      // A connection that lived a while starts the count again; one closed soon after it
      // opened (a server still refusing, 1013) counts as a failure, so the waits keep growing.
      if (openedAt && Date.now() - openedAt > stableAfter) failures = 0;
      openedAt = 0;
      // Full jitter: a random wait from 0 up to a ceiling, the base for a reconnect, doubling
      // with each failure when backing off, so that the clients of one server come back
      // spread out, not in one wave.
      let ceiling = baseDelay;
      if (backOff) {
        ceiling = Math.min(maxDelay, baseDelay * 2 ** failures);
        failures += 1;
      }
      setTimeout(open, Math.random() * ceiling);
    };
  }

  open();
  return {
    send: (data) => socket.send(data),
    close: (code = 1000, reason = "") => {
      stopped = true;
      socket.close(code, reason);
    },
  };
}
