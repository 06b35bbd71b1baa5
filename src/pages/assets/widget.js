// recur's widget (docs/pages.md#the-widget): embeds a checkout in an iframe on the
// merchant's page and reports its outcome.
//
//   <script src="https://pay.example.com/widget.js"></script>
//   Recur.mount({token, target: "#pay", onComplete: function (result) { ... }});
//
// The checkout posts its result to the framing page with that page's origin as the
// explicit target; this script takes a message only from recur's origin and from the
// frame it made.
(function () {
  "use strict";
  var script = document.currentScript;
  var recur = new URL(script ? script.src : "/", document.baseURI).origin;

  function mount(options) {
    var o = options || {};
    if (typeof o.token !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(o.token)) {
      throw new Error("Recur.mount: token must be a checkout session's token");
    }
    var target = typeof o.target === "string" ? document.querySelector(o.target) : o.target;
    if (!target) throw new Error("Recur.mount: target not found");
    var frame = document.createElement("iframe");
    frame.src = recur + "/checkout/" + o.token;
    frame.title = o.title || "Payment";
    frame.style.width = "100%";
    frame.style.border = "0";
    frame.style.minHeight = (o.height || 680) + "px";
    target.appendChild(frame);

    function onMessage(event) {
      if (event.origin !== recur || event.source !== frame.contentWindow) return;
      var d = event.data;
      if (!d || d.source !== "recur-checkout") return;
      if (typeof o.onComplete === "function") {
        o.onComplete({
          status: d.status,
          checkoutSessionId: d.checkoutSessionId,
          subscriptionId: d.subscriptionId,
          paymentSeriesId: d.paymentSeriesId,
          paymentMethod: d.paymentMethod,
        });
      }
    }
    window.addEventListener("message", onMessage);
    return {
      frame: frame,
      unmount: function () {
        window.removeEventListener("message", onMessage);
        frame.remove();
      },
    };
  }

  window.Recur = { mount: mount };
})();
