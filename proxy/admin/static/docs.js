// The interactive API documentation: Swagger UI (vendored under swagger-ui/) on the console's
// own schema. In a file, not inline, so the page's Content-Security-Policy can forbid inline
// scripts. "Try it out" sends the session cookie; a POST also needs the key: use Authorize.
"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({ url: root.dataset.openapi, domNode: root, deepLinking: false });
});
