// Starts Swagger UI on /docs. A file rather than an inline script, so that the
// page's Content-Security-Policy can refuse every inline script.
"use strict";

(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No call home: the validator badge would fetch from swagger.io.
    validatorUrl: null,
  });
})();
