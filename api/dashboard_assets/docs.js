// Starts Swagger UI on wasup's OpenAPI document. A token signed in on the dashboard (same
// tab) is offered to "Try it out" as X-API-TOKEN; it never appears in a URL.
/* global SwaggerUIBundle */
window.addEventListener("DOMContentLoaded", () => {
  const ui = SwaggerUIBundle({
    url: "/api/whatsapp/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    onComplete: () => {
      const token = sessionStorage.getItem("wasup.token");
      if (token) ui.preauthorizeApiKey("apiToken", token);
    },
  });
});
