// kubepam console: live countdowns. The only script the Content-Security-Policy allows (no inline code).
"use strict";
(function () {
  function left(until) {
    var s = Math.floor((Date.parse(until) - Date.now()) / 1000);
    if (isNaN(s)) return null;
    if (s <= 0) return "0s";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h" : "") + (m ? m + "m" : "") + (r ? r + "s" : "");
  }
  function tick() {
    var nodes = document.querySelectorAll("time.countdown");
    for (var i = 0; i < nodes.length; i++) {
      var text = left(nodes[i].getAttribute("datetime"));
      if (text !== null) nodes[i].textContent = text;
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
  });
})();
