// A browser WebSocket that comes back after a drain or a restart, without a reconnect storm.
//
// It reconnects on 1012 (Service Restart: a drain, a deploy), 1013 (Try Again Later) and 1006
// (no Close frame: a dropped connection, a server that is down, or a handshake refused with
// HTTP 503, which a browser reports as 1006). Every other code is final: 1000 and 1001 are
// ordinary ends, 1008 and 1009 say "do not send that again", 1011 is a server bug.
const RETRY_CODES = new Set([1006, 1012, 1013]);

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
      if (stopped || !RETRY_CODES.has(event.code)) return;
      // A connection that lived a while starts the count again; one closed soon after it
      // opened (a server still refusing, 1013) counts as a failure, so the waits keep growing.
      if (openedAt && Date.now() - openedAt > stableAfter) failures = 0;
      openedAt = 0;
      // Full jitter: a random wait from 0 up to a ceiling that doubles with each failure, so
      // that the clients of one server come back spread out, not in one wave.
      const ceiling = Math.min(maxDelay, baseDelay * 2 ** failures);
      failures += 1;
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
