// Keyward's pages work without this script; it adds copy and download buttons, and hides a revealed
// secret again after its time.
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-copy], button[data-download]");
    if (!b) return;
    var field = document.getElementById(b.dataset.copy || b.dataset.download);
    if (!field) return;
    if (b.dataset.copy) {
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { field.select(); document.execCommand("copy"); done(); });
      } else {
        field.select(); document.execCommand("copy"); done();
      }
    } else {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([field.value + "\n"], { type: "text/plain" }));
      a.download = b.dataset.filename || "credentials";
      document.body.appendChild(a); a.click(); a.remove();
    }
  });
  document.querySelectorAll("[data-hide-after]").forEach(function (box) {
    var left = parseInt(box.dataset.hideAfter, 10);
    var counter = document.querySelector("[data-countdown]");
    var tick = setInterval(function () {
      left -= 1;
      if (counter) counter.textContent = String(Math.max(left, 0));
      if (left <= 0) {
        clearInterval(tick);
        box.querySelectorAll("input, textarea").forEach(function (f) { f.value = ""; });
        box.classList.add("hidden-secret");
        box.insertAdjacentHTML("afterbegin", '<p class="error" role="status">Hidden again. Reveal it once more if you need it.</p>');
      }
    }, 1000);
  });
})();
