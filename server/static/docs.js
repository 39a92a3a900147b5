// Swagger UI from the server's own copy (fastapi-offline's bundle), with no validator badge (it
// would load an image from validator.swagger.io). The key typed into the playground, if any, is
// sent with every request, /openapi.json included, which needs it when the server has keys.
const key = sessionStorage.getItem("nrg-api-key");
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  requestInterceptor: (request) => {
    if (key && !request.headers.Authorization) request.headers.Authorization = `Bearer ${key}`;
    return request;
  },
});
