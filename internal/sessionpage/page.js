"use strict";
// The link is https://EDGE_HOST/.sallyport/view#<token>: the token is in
// the fragment, which the browser never sends, and leaves the address bar
// (and history) before anything else happens.
(function () {
  var token = decodeURIComponent(location.hash.slice(1));
  history.replaceState(null, "", location.pathname);
  var state = document.getElementById("state");
  var log = document.getElementById("log");
  var maxLines = 1000;
  var reasons = {
    "session link already used": "This link was already used. A link opens once; ask for a new one.",
    "session expired": "This link has expired. Ask for a new one.",
    "session revoked": "This link was revoked. Ask for a new one.",
    "unknown session link": "This link is not known here. Check that it was copied whole."
  };
  function say(text, kind) {
    state.textContent = text;
    state.className = kind;
  }
  function line(text) {
    // Follow the tail only while the reader is at the bottom.
    var follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
    var div = document.createElement("div");
    div.textContent = text;
    log.appendChild(div);
    while (log.childNodes.length > maxLines) {
      log.removeChild(log.firstChild);
    }
    if (follow) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  }
  if (!token) {
    say("This page needs a session link (…/.sallyport/view#<token>).", "closed");
    return;
  }
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  // The token travels in Sec-WebSocket-Protocol only; the edge answers
  // with "sallyport.session", never echoing the token.
  var ws = new WebSocket(scheme + location.host + "/s/", ["sallyport.session", "sallyport.session." + token]);
  ws.binaryType = "arraybuffer";
  var decoder = new TextDecoder();
  var partial = "";
  say("Connecting…", "wait");
  ws.onopen = function () { say("Connected: live tail", "open"); };
  ws.onmessage = function (ev) {
    var text = partial + (typeof ev.data === "string" ? ev.data : decoder.decode(ev.data, { stream: true }));
    var parts = text.split("\n");
    partial = parts.pop();
    parts.forEach(function (p) { line(p.replace(/\r$/, "")); });
  };
  ws.onclose = function (ev) {
    if (partial) { line(partial); partial = ""; }
    var why = ev.reason ? (reasons[ev.reason] || "Closed: " + ev.reason) : (ev.code === 1000 ? "The service ended the session." : "The connection was lost (code " + ev.code + ").");
    say(why, "closed");
  };
})();
