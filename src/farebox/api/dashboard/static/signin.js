// One-click sign-in: /dashboard/signin#key=... . The fragment never reaches the server or its
// logs; this script reads it, clears it from the address bar and history, and posts the key.
// When a session already exists (the server says so in data-signed-in-as), it asks first:
// a link must not silently replace who you are signed in as.
(function () {
  "use strict";
  var hash = window.location.hash;
  if (!hash || hash.length < 2) { return; }
  var params = new URLSearchParams(hash.slice(1));
  var key = params.get("key");
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (!key) { return; }
  var form = document.getElementById("signin-form");
  var input = document.getElementById("key");
  if (!form || !input) { return; }
  input.value = key;
  if (!form.getAttribute("data-signed-in-as")) {
    form.submit();
    return;
  }
  var prompt = document.getElementById("signin-switch");
  var confirm = document.getElementById("signin-switch-confirm");
  if (!prompt || !confirm) { return; }
  prompt.hidden = false;
  confirm.addEventListener("click", function () { form.submit(); });
})();
