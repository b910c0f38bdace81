// Starts Swagger UI on this service's own description. The URLs are relative to the page
// (/api/mcp/docs), so they hold behind a proxy that mounts the service under a prefix.
// validatorUrl null: Swagger UI would otherwise send the document to an online validator.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
