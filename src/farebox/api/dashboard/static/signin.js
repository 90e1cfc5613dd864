// One-click sign-in: /dashboard/signin#key=... . The fragment never reaches the server or its
// logs; this script reads it, clears it from the address bar and history, and posts the key.
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
  form.submit();
})();
