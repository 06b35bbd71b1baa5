// recur's checkout page (docs/pages.md#javascript): conveniences only. The form works
// without this script; the server checks every card itself.
(function () {
  "use strict";

  // Card number: digits grouped as printed, and the brand named as it is typed.
  var number = document.getElementById("number");
  var brandOut = document.getElementById("brand");
  function brandOf(d) {
    var p2 = parseInt(d.slice(0, 2), 10), p3 = parseInt(d.slice(0, 3), 10), p4 = parseInt(d.slice(0, 4), 10);
    if (/^4/.test(d)) return "Visa";
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return "Mastercard";
    if (p2 === 34 || p2 === 37) return "American Express";
    if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return "Discover";
    if (p4 >= 3528 && p4 <= 3589) return "JCB";
    if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return "Diners Club";
    return "";
  }
  function group(d, brand) {
    if (brand === "American Express") {
      return [d.slice(0, 4), d.slice(4, 10), d.slice(10, 15)].filter(Boolean).join(" ");
    }
    return d.replace(/(\d{4})(?=\d)/g, "$1 ");
  }
  if (number && brandOut) {
    number.addEventListener("input", function () {
      var digits = number.value.replace(/\D/g, "").slice(0, 19);
      var brand = brandOf(digits);
      var atEnd = number.selectionStart === number.value.length;
      number.value = group(digits, brand);
      if (atEnd) number.setSelectionRange(number.value.length, number.value.length);
      brandOut.textContent = digits.length >= 2 && brand ? brand : "";
    });
  }

  // Expiry: "MM/YY" as it is typed.
  var expiry = document.getElementById("expiry");
  if (expiry) {
    expiry.addEventListener("input", function (e) {
      var d = expiry.value.replace(/\D/g, "").slice(0, 4);
      if (e.inputType === "deleteContentBackward") return;
      expiry.value = d.length > 2 ? d.slice(0, 2) + "/" + d.slice(2) : d;
    });
  }

  // One submission at a time.
  var form = document.getElementById("card-form");
  if (form) {
    form.addEventListener("submit", function () {
      var b = form.querySelector("button[type=submit]");
      if (b) { b.disabled = true; b.textContent = "Processing…"; }
    });
  }

  // The first charge: poll until it settles, then show the page again.
  var poll = document.querySelector("[data-poll]");
  if (poll) {
    var url = poll.getAttribute("data-poll");
    var tick = function () {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          if (s.state === "processing") setTimeout(tick, 1000);
          else window.location.reload();
        })
        .catch(function () { setTimeout(tick, 2000); });
    };
    setTimeout(tick, 500);
  }

  // Done inside the merchant's iframe: tell the embedding page, and only it. A message
  // is posted to each allowed origin; the browser delivers it only to the one that
  // actually embeds this page.
  var done = document.querySelector("[data-result]");
  if (done && window.parent !== window) {
    var result = JSON.parse(done.getAttribute("data-result"));
    var origins = JSON.parse(done.getAttribute("data-origins") || "[]");
    origins.forEach(function (o) { window.parent.postMessage(result, o); });
  }
})();
